"""Dynamic padding: each micro-batch is padded to its own longest row (rounded up to ``pad_to_multiple_of``);
train task batches also carry where their targets are (:func:`locate_targets`, on the host, so the step
never asks the device). A ``seq2seq`` student gets encoder inputs and ``labels`` (:func:`pad_task`); a
``causal`` one ``prompt + completion`` rows, ``labels`` -100 but on the completion (:func:`pad_causal_task`),
and for evaluation the prompts alone, left-padded. The shared-input layout: :mod:`distill.data.shared_input`.
:class:`Collator` is picklable, for DataLoader workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill.data.encoding import encode_inputs

__all__ = ["IGNORE_INDEX", "Collator", "encode_batch", "locate_targets", "pad_causal_task", "pad_prompts",
           "pad_sequences", "pad_task", "round_up"]

#: label id that the loss ignores (padding, and rows without a target for this task)
IGNORE_INDEX = -100


def round_up(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int = 1, left: bool = False
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token-id rows padded with ``pad_token_id`` to the
    longest (rounded up to ``pad_to_multiple_of``), on the right or, with ``left``, on the left."""
    width = round_up(max(len(ids) for ids in sequences), pad_to_multiple_of)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            columns = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, columns] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, columns] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def locate_targets(label_ids: torch.Tensor, column_shift: int = 0) -> dict[str, torch.Tensor]:
    """``target_positions`` (row, column of the output predicting each target token, i.e. each id
    other than -100: its own column + ``column_shift``) and ``target_ids``, in row-major order."""
    is_target = label_ids != IGNORE_INDEX
    positions = is_target.nonzero()
    if column_shift:
        positions[:, 1] += column_shift
    return {"target_positions": positions, "target_ids": label_ids[is_target]}


def pad_task(
    inputs: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    pad_token_id: int,
    pad_to_multiple_of: int = 1,
    with_targets: bool = False,
) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` right-padded with ``pad_token_id``; ``labels`` with -100;
    with ``with_targets``, also ``target_positions`` and ``target_ids``."""
    batch = pad_sequences(inputs, pad_token_id, pad_to_multiple_of)
    label_width = round_up(max(1, max(len(ids) for ids in labels)), pad_to_multiple_of)
    label_ids = torch.full((len(labels), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, target in enumerate(labels):
        if target:
            label_ids[row, : len(target)] = torch.as_tensor(target, dtype=torch.long)
    batch["labels"] = label_ids
    if with_targets:
        batch.update(locate_targets(label_ids))
    return batch


def pad_prompts(
    prompts: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int = 1
) -> dict[str, torch.Tensor]:
    """Left-padded prompts for a causal student to continue: ``input_ids`` and ``attention_mask``."""
    return pad_sequences(prompts, pad_token_id, pad_to_multiple_of, left=True)


def pad_causal_task(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_token_id: int,
    pad_to_multiple_of: int = 1,
    with_targets: bool = False,
) -> dict[str, torch.Tensor]:
    """``prompt + completion`` rows right-padded; ``labels`` -100 but on completion tokens; with
    ``with_targets``, ``target_positions`` (row, column of the output predicting each completion
    token: its own column - 1) and ``target_ids``."""
    if not all(prompts):
        raise ValueError("a causal student's prompt needs at least one token (encode_inputs gives one)")
    batch = pad_sequences([list(p) + list(c) for p, c in zip(prompts, completions)], pad_token_id, pad_to_multiple_of)
    label_ids = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        if completion:
            label_ids[row, len(prompt) : len(prompt) + len(completion)] = torch.as_tensor(completion, dtype=torch.long)
    batch["labels"] = label_ids
    if with_targets:
        batch.update(locate_targets(label_ids, column_shift=-1))
    return batch


def encode_batch(tokenizer: Any, texts: Sequence[str], max_length: int, kind: str = "seq2seq") -> dict[str, torch.Tensor]:
    """Already prefixed texts as one input batch the way training encodes them: a seq2seq
    student's encoder input (right-padded) or a causal student's prompts (left-padded)."""
    ids = encode_inputs(tokenizer, list(texts), max_length, kind)
    return pad_sequences(ids, tokenizer.pad_token_id, left=kind == "causal")


class Collator:
    """Rows of the tokenized dataset -> a train batch (both tasks) or an eval batch, laid out for
    a ``seq2seq`` or a ``causal`` student (``student_kind``; see the module doc)."""

    def __init__(
        self,
        pad_token_id: int,
        train: bool,
        rationale_task: bool = False,
        pad_to_multiple_of: int = 1,
        student_kind: str = "seq2seq",
        shared_markers: tuple[Sequence[int], Sequence[int]] | None = None,
    ) -> None:
        if student_kind not in ("seq2seq", "causal"):
            raise ValueError(f"unknown student kind {student_kind!r}: expected 'seq2seq' or 'causal'")
        self.pad_token_id = pad_token_id
        self.train = train
        self.rationale_task = rationale_task
        self.pad_to_multiple_of = pad_to_multiple_of
        self.student_kind = student_kind
        #: (label marker, rationale marker) ids: train batches in the shared-input layout
        #: (:mod:`distill.data.shared_input`), whose ``label_input_ids`` are x alone
        self.shared_markers = shared_markers

    def _task(self, rows: Sequence[dict[str, Any]], task: str) -> dict[str, torch.Tensor]:
        inputs, targets = [r[f"{task}_input_ids"] for r in rows], [r[f"{task}_ids"] for r in rows]
        if self.student_kind == "seq2seq":
            return pad_task(inputs, targets, self.pad_token_id, self.pad_to_multiple_of, with_targets=self.train)
        if self.train:
            return pad_causal_task(inputs, targets, self.pad_token_id, self.pad_to_multiple_of, with_targets=True)
        return pad_prompts(inputs, self.pad_token_id, self.pad_to_multiple_of)

    def _shared(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A train batch in the shared-input layout: ``{"shared": ..., "uid"}`` for a causal student
        (one sequence per row); the encoder input as ``"shared"`` and each task's decoder side as
        ``"label"``/``"rationale"`` for a seq2seq one."""
        from distill.data.shared_input import pad_decoder_task, pad_shared_causal

        label_marker, rationale_marker = self.shared_markers
        inputs = [r["label_input_ids"] for r in rows]
        labels = [r["label_ids"] for r in rows]
        rationales = [r["rationale_ids"] for r in rows] if self.rationale_task else [[] for _ in rows]
        batch: dict[str, Any] = {"uid": [r["uid"] for r in rows]}
        if self.student_kind == "causal":
            batch["shared"] = pad_shared_causal(inputs, label_marker, labels, rationale_marker, rationales,
                                                self.pad_token_id, self.pad_to_multiple_of)
            return batch
        batch["shared"] = pad_sequences(inputs, self.pad_token_id, self.pad_to_multiple_of)
        batch["label"] = pad_decoder_task(label_marker, labels, self.pad_to_multiple_of)
        if any(rationales):
            batch["rationale"] = pad_decoder_task(rationale_marker, rationales, self.pad_to_multiple_of)
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
