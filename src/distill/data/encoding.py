"""Tokenizing examples for both tasks (:class:`Encoder`, run through ``datasets.map``: it must pickle and hash).
A target is its tokens without special tokens, then eos, ``max_target_length``/``max_rationale_length`` in
all. An input (:func:`encode_inputs`, shared with generation) is truncated from the right to
``max_input_length``: with the tokenizer's special tokens for a ``seq2seq`` student; for a ``causal`` one
with only those it puts before a text (the completion follows directly, and eos appears nowhere else)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.benchmarks.base import Example
from distill.data.targets import single_task_target
from distill.methods import Method, get_method

__all__ = ["ENCODING_VERSION", "Encoder", "encode_inputs", "marker_ids", "marker_room", "prompt_start_tokens", "target_text"]

#: bump when the encoded columns change, so stale cache files are not reused
ENCODING_VERSION = 1


def target_text(
    example: Example, method: str | Method, label_source: str = "gold", rationale_position: str = "before"
) -> str | None:
    """The label-task target of an example: its gold or teacher label, or where the method's label
    target holds the rationale (``single_task``) the rationale and that label (``rationale_position``:
    the rationale before the label, or after). None when the example has no such label."""
    label = example.teacher_label if label_source in ("teacher", "teacher_vote") else example.gold
    if label is None:
        return None
    if get_method(method).label_holds_rationale:
        return single_task_target(example.rationale, label, rationale_position)
    return label


def prompt_start_tokens(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text (``[bos]``, ``[CLS]``, or none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def encode_inputs(tokenizer: Any, texts: list[str], max_length: int, kind: str = "seq2seq") -> list[list[int]]:
    """Token ids of already prefixed inputs, for a student of ``kind`` (see the module doc)."""
    if kind == "seq2seq":
        return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    if kind != "causal":
        raise ValueError(f"unknown student kind {kind!r}: expected 'seq2seq' or 'causal'")
    start = prompt_start_tokens(tokenizer)
    ids = tokenizer(
        list(texts), add_special_tokens=False, truncation=True, max_length=max(1, max_length - len(start))
    )["input_ids"]
    # an empty prompt still needs one position whose output predicts the completion's first token
    fallback = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return [start + list(tokens) if start or tokens else fallback for tokens in ids]


def marker_ids(tokenizer: Any, prefix: str) -> list[int]:
    """The token ids of a task marker (its prefix, no special tokens); an empty one is an error."""
    ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    if not ids:
        raise ValueError(
            f"method.shared_input needs a non-empty task marker, got prefix {prefix!r}: set data.label_prefix "
            "and data.rationale_prefix (the two tasks read the same x and are told apart by them alone)"
        )
    return ids


def marker_room(tokenizer: Any, prefixes: Sequence[str], kind: str) -> int:
    """Tokens of ``max_input_length`` that x leaves for a marker: the longest marker for a causal
    student (``x m`` fits the limit, as ``m x`` did), none for seq2seq (the marker is in the decoder)."""
    return max(len(marker_ids(tokenizer, p)) for p in prefixes) if kind == "causal" else 0


class Encoder:
    """A picklable batched map function: text columns in, token-id columns out.

    Output columns: ``label_input_ids``, ``label_ids`` and, for the rationale task,
    ``rationale_input_ids`` and ``rationale_ids`` (empty for examples without a rationale);
    ``length`` orders examples for length-grouped batching. ``*_input_ids`` are the encoder input
    of a ``seq2seq`` student, the prompt of a ``causal`` one (see the module doc). With
    ``shared_input``, ``label_input_ids`` holds x alone for both tasks and there is no
    ``rationale_input_ids`` (:mod:`distill.data.shared_input`).
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
        student_kind: str = "seq2seq",
        shared_input: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.student_kind = student_kind
        self.shared_input = shared_input
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
            "student_kind": self.student_kind,
            # only when on, so the caches of the paper's layout keep their keys
            **({"shared_input": True} if self.shared_input else {}),
        }

    def _inputs(self, prefix: str, texts: list[str]) -> list[list[int]]:
        return encode_inputs(self.tokenizer, [prefix + text for text in texts], self.max_input_length, self.student_kind)

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

    def _shared(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The shared-input layout: ``label_input_ids`` is x alone (room left for the marker after it,
        causal), the markers are added by the collator (:mod:`distill.data.shared_input`)."""
        room = marker_room(self.tokenizer, [self.label_prefix, self.rationale_prefix], self.student_kind)
        out: dict[str, list[Any]] = {
            "label_input_ids": encode_inputs(self.tokenizer, list(batch["input"]), self.max_input_length - room,
                                             self.student_kind),
            "label_ids": self._targets(batch["target"], self.max_target_length),
        }
        if self.rationale_task:
            out["rationale_ids"] = self._targets(batch["rationale"], self.max_rationale_length)
        rationales = out.get("rationale_ids", [[] for _ in out["label_ids"]])
        out["length"] = [len(i) + len(t) + len(r) for i, t, r in zip(out["label_input_ids"], out["label_ids"], rationales)]
        return out

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.shared_input:
            return self._shared(batch)
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
