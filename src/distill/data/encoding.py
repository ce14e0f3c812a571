"""Tokenizing examples for both tasks (run through ``datasets.map``, so it must pickle and hash).

Inputs are ``tokenizer(prefix + input)`` with the tokenizer's special tokens, truncated to
``max_input_length``. Targets are tokenized with ``add_special_tokens=False`` and the eos token is
appended, so T5 and BERT-based students see the same target layout; a target is truncated to
leave room for that eos (at most ``max_target_length`` / ``max_rationale_length`` tokens in all).
"""

from __future__ import annotations

from typing import Any

from distill.benchmarks.base import Example
from distill.data.targets import single_task_target

__all__ = ["ENCODING_VERSION", "Encoder", "target_text"]

#: bump when the encoded columns change, so stale cache files are not reused
ENCODING_VERSION = 1


def target_text(example: Example, targets: str, label_source: str = "gold") -> str | None:
    """The label-task target of an example: its gold or teacher label, or for ``single_task``
    the rationale followed by that label. None when the example has no such label."""
    label = example.teacher_label if label_source == "teacher" else example.gold
    if label is None:
        return None
    if targets == "single_task":
        return single_task_target(example.rationale, label)
    return label


class Encoder:
    """A picklable batched map function: text columns in, token-id columns out.

    Output columns: ``label_input_ids``, ``label_ids`` and, for the rationale task,
    ``rationale_input_ids`` and ``rationale_ids`` (empty for examples without a rationale);
    ``length`` orders examples for length-grouped batching.
    """

    def __init__(
        self,
        tokenizer: Any,
        label_prefix: str,
        rationale_prefix: str,
        max_input_length: int,
        max_target_length: int,
        max_rationale_length: int,
        rationale_task: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.label_prefix = label_prefix
        self.rationale_prefix = rationale_prefix
        self.max_input_length = max_input_length
        self.max_target_length = max_target_length
        self.max_rationale_length = max_rationale_length
        self.rationale_task = rationale_task

    def settings(self) -> dict[str, Any]:
        """Everything besides tokenizer and texts that changes the output (for the cache key)."""
        return {
            "label_prefix": self.label_prefix,
            "rationale_prefix": self.rationale_prefix,
            "max_input_length": self.max_input_length,
            "max_target_length": self.max_target_length,
            "max_rationale_length": self.max_rationale_length,
            "rationale_task": self.rationale_task,
        }

    def _inputs(self, prefix: str, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(
            [prefix + text for text in texts], truncation=True, max_length=self.max_input_length
        )["input_ids"]

    def _targets(self, texts: list[str | None], max_length: int) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        present = [i for i, text in enumerate(texts) if text is not None]
        out: list[list[int]] = [[] for _ in texts]
        if present:
            ids = self.tokenizer(
                [texts[i] for i in present],
                add_special_tokens=False,
                truncation=True,
                max_length=max(1, max_length - 1),
            )["input_ids"]
            for i, tokens in zip(present, ids):
                out[i] = list(tokens) + [eos]
        return out

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "label_input_ids": self._inputs(self.label_prefix, batch["input"]),
            "label_ids": self._targets(batch["target"], self.max_target_length),
        }
        if self.rationale_task:
            out["rationale_input_ids"] = self._inputs(self.rationale_prefix, batch["input"])
            out["rationale_ids"] = self._targets(batch["rationale"], self.max_rationale_length)
            out["length"] = [len(i) + max(len(r), len(t)) for i, r, t in zip(
                out["label_input_ids"], out["rationale_ids"], out["label_ids"]
            )]
        else:
            out["length"] = [len(i) + len(t) for i, t in zip(out["label_input_ids"], out["label_ids"])]
        return out
