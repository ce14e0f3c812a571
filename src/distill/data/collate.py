"""Dynamic padding: each micro-batch is padded to its own longest sequence, not a fixed length.

A picklable class (no lambdas), so DataLoader workers (``num_workers > 0``) can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["IGNORE_INDEX", "Collator", "pad_task"]

#: label id that the loss ignores (padding, and rows without a target for this task)
IGNORE_INDEX = -100


def pad_task(inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` right-padded with ``pad_token_id``; ``labels`` with -100."""
    width = max(len(ids) for ids in inputs)
    label_width = max(1, max(len(ids) for ids in labels))
    input_ids = torch.full((len(inputs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
    label_ids = torch.full((len(labels), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, target) in enumerate(zip(inputs, labels)):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        if target:
            label_ids[row, : len(target)] = torch.as_tensor(target, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


class Collator:
    """Rows of the tokenized dataset -> a train batch (both tasks) or an eval batch."""

    def __init__(self, pad_token_id: int, train: bool, rationale_task: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.train = train
        self.rationale_task = rationale_task

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "label": pad_task(
                [r["label_input_ids"] for r in rows], [r["label_ids"] for r in rows], self.pad_token_id
            ),
            "uid": [r["uid"] for r in rows],
        }
        if self.train:
            if self.rationale_task and any(r["rationale_ids"] for r in rows):
                batch["rationale"] = pad_task(
                    [r["rationale_input_ids"] for r in rows], [r["rationale_ids"] for r in rows], self.pad_token_id
                )
        else:
            batch["input"] = [r["input"] for r in rows]
            batch["gold"] = [r["gold"] for r in rows]
        return batch
