"""Rows of the tokenized dataset -> batches (:class:`Collator`, picklable for DataLoader workers): a train
batch of the method's tasks or an eval batch, laid out for a ``seq2seq`` or a ``causal`` student and padded
by :mod:`distill.data.padding`; the shared-input layout by :mod:`distill.data.shared_input`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill.data.encoding import encode_inputs
from distill.data.padding import pad_causal_task, pad_sequences, pad_task
from distill.data.shared_input import pad_decoder_task, pad_shared_causal

__all__ = ["Collator", "encode_batch"]


def encode_batch(tokenizer: Any, texts: Sequence[str], max_length: int,
                 kind: str = "seq2seq") -> dict[str, torch.Tensor]:
    """Already prefixed texts as one input batch the way training encodes them: a seq2seq
    student's encoder input (right-padded) or a causal student's prompts (left-padded)."""
    ids = encode_inputs(tokenizer, list(texts), max_length, kind)
    return pad_sequences(ids, tokenizer.pad_token_id, left=kind == "causal")


class Collator:
    """Rows of the tokenized dataset -> a train batch (both tasks) or an eval batch, laid out for
    a ``seq2seq`` or a ``causal`` student (``student_kind``, checked by the data module)."""

    def __init__(self, pad_token_id: int, train: bool, rationale_task: bool = False, student_kind: str = "seq2seq",
                 shared_markers: tuple[Sequence[int], Sequence[int]] | None = None) -> None:
        self.pad_token_id, self.train, self.rationale_task = pad_token_id, train, rationale_task
        self.student_kind = student_kind
        #: (label marker, rationale marker) ids: train batches in the shared-input layout
        #: (:mod:`distill.data.shared_input`), whose ``label_input_ids`` are x alone
        self.shared_markers = shared_markers

    def _task(self, rows: Sequence[dict[str, Any]], task: str) -> dict[str, torch.Tensor]:
        inputs, targets = [r[f"{task}_input_ids"] for r in rows], [r[f"{task}_ids"] for r in rows]
        if self.student_kind == "seq2seq":
            return pad_task(inputs, targets, self.pad_token_id, with_targets=self.train)
        if self.train:
            return pad_causal_task(inputs, targets, self.pad_token_id, with_targets=True)
        return pad_sequences(inputs, self.pad_token_id, left=True)

    def _shared(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A train batch in the shared-input layout: ``{"shared": ..., "uid"}`` for a causal student
        (one sequence per row); the encoder input as ``"shared"`` and each task's decoder side as
        ``"label"``/``"rationale"`` for a seq2seq one."""
        label_marker, rationale_marker = self.shared_markers
        inputs = [r["label_input_ids"] for r in rows]
        labels = [r["label_ids"] for r in rows]
        rationales = [r["rationale_ids"] for r in rows] if self.rationale_task else [[] for _ in rows]
        batch: dict[str, Any] = {"uid": [r["uid"] for r in rows]}
        if self.student_kind == "causal":
            batch["shared"] = pad_shared_causal(inputs, label_marker, labels, rationale_marker, rationales,
                                                self.pad_token_id)
            return batch
        batch["shared"] = pad_sequences(inputs, self.pad_token_id)
        batch["label"] = pad_decoder_task(label_marker, labels)
        if any(rationales):
            batch["rationale"] = pad_decoder_task(rationale_marker, rationales)
        return batch

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if self.train and self.shared_markers is not None:
            return self._shared(rows)
        batch: dict[str, Any] = {"label": self._task(rows, "label"), "uid": [r["uid"] for r in rows]}
        if self.train:
            if self.rationale_task and any(r["rationale_ids"] for r in rows):
                batch["rationale"] = self._task(rows, "rationale")
        else:
            batch["input"] = [r["input"] for r in rows]
            batch["gold"] = [r["gold"] for r in rows]
        return batch
