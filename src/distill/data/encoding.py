"""Tokenizing examples for both tasks: :class:`Encoder` (run through ``datasets.map``: it must pickle and hash)
over a split's text rows (:func:`text_rows`), once per split (:func:`tokenize`: in one process or, for big
splits, one per core; stored at a cache path as Arrow files listed in a manifest, which a warm start reads
alone). A target is its tokens without special tokens, then eos, ``max_target_length``/``max_rationale_length``
in all. An input (:func:`encode_inputs`, shared with generation) is truncated from the right to
``max_input_length``: with the tokenizer's special tokens for a ``seq2seq`` student; for a ``causal`` one with
only those it puts before a text (the completion follows directly, and eos appears nowhere else). Each row
also records its token counts before truncation (``*_tokens``), which the data summary reports."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill.benchmarks.base import Example
from distill.data.targets import TEACHER_LABELS, single_task_target
from distill.methods import Method, get_method

__all__ = ["ENCODING_VERSION", "PARALLEL_TOKENIZATION_ROWS", "Encoder", "count_tokens",
           "encode_inputs", "marker_ids", "marker_room", "prompt_start_tokens", "rows_digest", "target_text",
           "text_rows", "tokenize"]

#: bump when the encoded columns change, so stale cache files are not reused
ENCODING_VERSION = 2


def target_text(example: Example, method: str | Method, label_source: str = "gold",
                rationale_position: str = "before") -> str | None:
    """The label-task target of an example: its gold or teacher label, or where the method's label
    target holds the rationale (``single_task``) the rationale and that label (``rationale_position``:
    the rationale before the label, or after). None when the example has no such label."""
    label = example.teacher_label if label_source in TEACHER_LABELS else example.gold
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
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                    max_length=max(1, max_length - len(start)))["input_ids"]
    # an empty prompt still needs one position whose output predicts the completion's first token
    fallback = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return [start + list(tokens) if start or tokens else fallback for tokens in ids]


def count_tokens(tokenizer: Any, texts: Sequence[str], special: bool) -> list[int]:
    """Token counts of ``texts`` without truncation, with the tokenizer's special tokens or without any."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=special, return_attention_mask=False, return_token_type_ids=False,
                    verbose=False)["input_ids"]
    return [len(tokens) for tokens in ids]


def marker_ids(tokenizer: Any, prefix: str) -> list[int]:
    """The token ids of a task marker (its prefix, no special tokens); an empty one is an error."""
    ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    if not ids:
        raise ValueError(f"method.shared_input needs a non-empty task marker, got prefix {prefix!r}: set "
                         "data.label_prefix and data.rationale_prefix (the two tasks read the same x and are told "
                         "apart by them alone)")
    return ids


def marker_room(tokenizer: Any, prefixes: Sequence[str], kind: str) -> int:
    """Tokens of ``max_input_length`` that x leaves for a marker: the longest marker for a causal
    student (``x m`` fits the limit, as ``m x`` did), none for seq2seq (the marker is in the decoder)."""
    return max(len(marker_ids(tokenizer, p)) for p in prefixes) if kind == "causal" else 0


class Encoder:
    """Text columns (``input``, ``target``, ``rationale``) in, token ids out: ``label_input_ids``, ``label_ids``
    and, for the rationale task, ``rationale_input_ids`` and ``rationale_ids`` (empty without a rationale);
    ``length`` for length-grouped batching; ``input_tokens``, ``label_tokens``, ``rationale_tokens``: counts
    before truncation (0: none). With ``shared_input``, ``label_input_ids`` is x alone for both tasks (a causal
    one leaves room for the longest marker after it, counted in ``input_tokens``; :mod:`distill.data.shared_input`)."""

    def __init__(self, tokenizer: Any, label_prefix: str, rationale_prefix: str, max_input_length: int,
                 max_target_length: int, max_rationale_length: int, rationale_task: bool, student_kind: str = "seq2seq",
                 shared_input: bool = False) -> None:
        self.tokenizer = tokenizer
        self.label_prefix, self.rationale_prefix = label_prefix, rationale_prefix
        self.max_input_length, self.max_target_length = max_input_length, max_target_length
        self.max_rationale_length, self.rationale_task = max_rationale_length, rationale_task
        self.student_kind, self.shared_input = student_kind, shared_input

    def settings(self) -> dict[str, Any]:
        """Everything besides tokenizer and texts that changes the output (for the cache key)."""
        return {name: getattr(self, name) for name in (
            "label_prefix", "rationale_prefix", "max_input_length", "max_target_length", "max_rationale_length",
            "rationale_task", "student_kind", "shared_input")}

    @staticmethod
    def _counts(texts: list[Any], encoded: list[list[int]], full: int, recount: Any) -> list[int]:
        """Token counts before truncation: each encoding's length, or where it reached ``full`` (it may
        have been cut) its text's count by ``recount``."""
        counts = [len(ids) for ids in encoded]
        cut = [i for i, n in enumerate(counts) if n >= full]
        for i, n in zip(cut, recount([texts[i] for i in cut])):
            counts[i] = n
        return counts

    def _inputs(self, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
        """Input ids (:func:`encode_inputs`) and their token counts before truncation."""
        ids = encode_inputs(self.tokenizer, texts, max_length, self.student_kind)
        if self.student_kind == "seq2seq":
            return ids, self._counts(texts, ids, max_length, lambda cut: count_tokens(self.tokenizer, cut, True))
        start = len(prompt_start_tokens(self.tokenizer))
        return ids, self._counts(texts, ids, start + max(1, max_length - start),
                                 lambda cut: [start + n for n in count_tokens(self.tokenizer, cut, False)])

    def _targets(self, texts: list[str | None], max_length: int) -> tuple[list[list[int]], list[int]]:
        """Target ids (tokens, then eos; none for a None text) and their token counts before truncation."""
        eos, keep = self.tokenizer.eos_token_id, max(1, max_length - 1)
        present = [i for i, text in enumerate(texts) if text is not None]
        out: list[list[int]] = [[] for _ in texts]
        if present:
            ids = self.tokenizer([texts[i] for i in present], add_special_tokens=False, truncation=True,
                                 max_length=keep)["input_ids"]
            for i, tokens in zip(present, ids):
                out[i] = list(tokens) + [eos]
        recount = lambda cut: [n + 1 for n in count_tokens(self.tokenizer, cut, False)]  # noqa: E731
        return out, self._counts(texts, out, keep + 1, recount)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        shared = self.shared_input  # x alone, room left for a marker after it (the collator adds the markers)
        markers = [self.label_prefix, self.rationale_prefix]
        room = marker_room(self.tokenizer, markers, self.student_kind) if shared else 0
        texts = [("" if shared else self.label_prefix) + t for t in batch["input"]]
        out["label_input_ids"], inputs = self._inputs(texts, self.max_input_length - room)
        out["label_ids"], out["label_tokens"] = self._targets(batch["target"], self.max_target_length)
        out["input_tokens"] = [n + room for n in inputs]
        rationale_ids, out["rationale_tokens"] = self._targets(batch["rationale"], self.max_rationale_length)
        label_lengths = [len(i) + len(t) for i, t in zip(out["label_input_ids"], out["label_ids"])]
        if not self.rationale_task:
            out["length"] = label_lengths
            return out
        out["rationale_ids"] = rationale_ids
        if self.shared_input:
            out["length"] = [n + len(r) for n, r in zip(label_lengths, rationale_ids)]
        else:
            out["rationale_input_ids"], _ = self._inputs([self.rationale_prefix + t for t in batch["input"]],
                                                         self.max_input_length)
            out["length"] = [len(i) + max(len(r), len(t)) for i, r, t in zip(
                out["label_input_ids"], rationale_ids, out["label_ids"])]
        return out


#: ``num_proc=None`` tokenizes a split in several processes from this many rows on (below, one costs more than it pays)
PARALLEL_TOKENIZATION_ROWS = 50_000
TEXT_COLUMNS = ("uid", "input", "gold", "target", "rationale")


def text_rows(examples: Sequence[Example], method: Method, label_source: str,
              rationale_position: str) -> dict[str, list[Any]]:
    """The text columns of a split: uid, input, gold, the label target (``label_source``'s label, as
    :func:`~distill.data.encoding.target_text` lays it out for ``method``) and the rationale."""
    rows = [(e.uid, e.input, e.gold, target_text(e, method, label_source, rationale_position), e.rationale)
            for e in examples]
    return {name: [row[i] for row in rows] for i, name in enumerate(TEXT_COLUMNS)}


def rows_digest(rows: dict[str, list[Any]]) -> str:
    """A version of text rows that have no data version (a benchmark made in code): their texts."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:40]


def _stored(manifest: Path) -> Any:
    """The tokenized split a manifest lists (its Arrow files, memory-mapped), or None when incomplete."""
    if not manifest.is_file():
        return None
    import datasets

    paths = [manifest.parent / name for name in json.loads(manifest.read_text())]
    if not paths or not all(path.is_file() for path in paths):
        return None
    parts = [datasets.Dataset.from_file(str(path)) for path in paths]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def tokenize(rows: Callable[[], dict[str, list[Any]]], encoder: Encoder, path: Path | None,
             num_proc: int | None, desc: str) -> Any:
    """The ``datasets.Dataset`` of ``rows()`` mapped by ``encoder`` (``uid``, ``input`` and ``gold`` kept,
    ``target`` and ``rationale`` dropped) in ``num_proc`` processes (None: one per core for big splits). With
    ``path``: the files ``{path}.files.json`` lists when they are all there, else stored at ``{path}.arrow``
    (one file per process) and listed there."""
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    manifest = None if path is None else path.with_name(f"{path.name}.files.json")
    if manifest is not None and (stored := _stored(manifest)) is not None:
        return stored
    features = datasets.Features({name: datasets.Value("string") for name in TEXT_COLUMNS})
    raw = datasets.Dataset.from_dict(rows(), features=features)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if num_proc is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        num_proc = min(cores, len(raw) // PARALLEL_TOKENIZATION_ROWS)
    encoded = raw.map(encoder, batched=True, batch_size=1000, remove_columns=["target", "rationale"],
                      cache_file_name=None if path is None else str(path.with_name(f"{path.name}.arrow")),
                      load_from_cache_file=True,
                      new_fingerprint=generate_random_fingerprint() if path is None else path.name,
                      num_proc=num_proc if num_proc > 1 else None, desc=desc)
    if manifest is not None and encoded.cache_files:
        staging = manifest.with_name(f".{manifest.name}.{os.getpid()}")
        staging.write_text(json.dumps([Path(f["filename"]).name for f in encoded.cache_files]))
        os.replace(staging, manifest)
    return encoded
