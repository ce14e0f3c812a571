"""Dynamic padding: each micro-batch is padded to its own longest sequence, not a fixed length
(rounded up to ``pad_to_multiple_of``, which GPU matrix units and compiled graphs like).

Train task batches also carry where their targets are, computed here on the host so the training
step never has to ask the device: ``target_positions`` (``(targets, 2)``: row and column of each
target token in ``labels``) and ``target_ids`` (those tokens), in row-major order.

A picklable class (no lambdas), so DataLoader workers (``num_workers > 0``) can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["IGNORE_INDEX", "Collator", "pad_task"]

#: label id that the loss ignores (padding, and rows without a target for this task)
IGNORE_INDEX = -100


def _round_up(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def pad_task(
    inputs: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    pad_token_id: int,
    pad_to_multiple_of: int = 1,
    with_targets: bool = False,
) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` right-padded with ``pad_token_id``; ``labels`` with -100;
    with ``with_targets``, also ``target_positions`` and ``target_ids``."""
    width = _round_up(max(len(ids) for ids in inputs), pad_to_multiple_of)
    label_width = _round_up(max(1, max(len(ids) for ids in labels)), pad_to_multiple_of)
    input_ids = torch.full((len(inputs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
    label_ids = torch.full((len(labels), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, target) in enumerate(zip(inputs, labels)):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        if target:
            label_ids[row, : len(target)] = torch.as_tensor(target, dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}
    if with_targets:
        is_target = label_ids != IGNORE_INDEX
        batch["target_positions"] = is_target.nonzero()
        batch["target_ids"] = label_ids[is_target]
    return batch


class Collator:
    """Rows of the tokenized dataset -> a train batch (both tasks) or an eval batch."""

    def __init__(
        self, pad_token_id: int, train: bool, rationale_task: bool = False, pad_to_multiple_of: int = 1
    ) -> None:
        self.pad_token_id = pad_token_id
        self.train = train
        self.rationale_task = rationale_task
        self.pad_to_multiple_of = pad_to_multiple_of

    def _task(self, rows: Sequence[dict[str, Any]], task: str) -> dict[str, torch.Tensor]:
        return pad_task(
            [r[f"{task}_input_ids"] for r in rows],
            [r[f"{task}_ids"] for r in rows],
            self.pad_token_id,
            self.pad_to_multiple_of,
            with_targets=self.train,
        )

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"label": self._task(rows, "label"), "uid": [r["uid"] for r in rows]}
        if self.train:
            if self.rationale_task and any(r["rationale_ids"] for r in rows):
                batch["rationale"] = self._task(rows, "rationale")
        else:
            batch["input"] = [r["input"] for r in rows]
            batch["gold"] = [r["gold"] for r in rows]
        return batch
