"""Which teacher rationales a train example learns from when the teacher wrote several per example
(docs/teachers.md): ``data.rationales`` (``first``, ``all``, ``sample``), ``data.rationale_filter``
(``none``, ``teacher_correct``) and ``data.label_source=teacher_vote``. A row made from sample s of
example ``uid`` has the uid ``{uid}#s{s}`` (:func:`example_uid` gives ``uid`` back). The defaults change nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.benchmarks.base import Benchmark, DataError, Example
from distill.benchmarks.io import read_teacher_completions, records_path, shard_paths
from distill.teacher.vote import majority_vote

__all__ = ["RATIONALE_CHOICES", "RATIONALE_FILTERS", "SAMPLE_MARK", "Sample", "example_uid", "read_samples",
           "select_rationales"]

RATIONALE_CHOICES = ("first", "all", "sample")
RATIONALE_FILTERS = ("none", "teacher_correct")
#: between an example's uid and the sample index in the uid of a row made from one sample
SAMPLE_MARK = "#s"


@dataclass(frozen=True)
class Sample:
    """One teacher sample of an example, parsed: label None when it did not parse."""

    index: int
    label: str | None
    rationale: str | None


def example_uid(row_uid: str) -> str:
    """The uid of the example a train row was made from (the row's own uid outside ``all``/``sample``)."""
    head, mark, tail = row_uid.rpartition(SAMPLE_MARK)
    return head if mark and tail.isdigit() else row_uid


def read_samples(benchmark: Benchmark, data_dir: str | Path, teacher: str, file_split: str,
                 rows: int) -> list[list[Sample]] | None:
    """``[row][sample]`` of every per-sample shard set of ``teacher`` for ``file_split``; None when the
    teacher wrote one sample (no ``samples/`` shard sets). Shards of the wrong size are refused."""
    samples: list[list[Sample]] = [[] for _ in range(rows)]
    s = 0
    while shard_paths(data_dir, benchmark.name, directory := f"{teacher}/samples/{s}", file_split):
        completions, _ = read_teacher_completions(data_dir, benchmark.name, directory, file_split, expected_rows=rows,
                                                  records_file=records_path(data_dir, benchmark.name, file_split))
        for row, text in zip(samples, completions):
            parsed = benchmark.parse_completion(text)
            rationale = parsed.rationale if parsed.ok and parsed.rationale and parsed.rationale.strip() else None
            row.append(Sample(s, parsed.label if parsed.ok else None, rationale))
        s += 1
    return samples if s else None


def select_rationales(benchmark: Benchmark, train: Sequence[Example], samples: list[list[Sample]] | None,
                      rationales: str = "first", rationale_filter: str = "none",
                      label_source: str = "gold") -> tuple[list[Example], dict[str, Any]]:
    """The train rows and their account (see the module doc). ``samples``: :func:`read_samples` of the
    train file (rows found by the uid's index), None for a one-sample teacher (its top-level shards
    are then its only sample)."""
    if rationales not in RATIONALE_CHOICES:
        raise ValueError(f"data.rationales must be one of {RATIONALE_CHOICES}, got {rationales!r}")
    if rationale_filter not in RATIONALE_FILTERS:
        raise ValueError(f"data.rationale_filter must be one of {RATIONALE_FILTERS}, got {rationale_filter!r}")
    rows: list[Example] = []
    counts = {"rationales": rationales, "filter": rationale_filter, "examples": len(train),
              "samples_per_example": 1 if samples is None else len(samples[0]) if samples else 0,
              "candidates": 0, "kept": 0, "filtered": 0, "label_only": 0, "no_vote": 0}
    # candidates: samples with a rationale; kept: those the filter keeps (one row each); label_only: examples
    # left without a rationale (one row, label task alone); no_vote: examples dropped for want of a vote
    for ex in train:
        # a file row's uid ends in its index: {name}/{file split}/{index}
        own = [Sample(0, ex.teacher_label, ex.rationale)] if samples is None else samples[int(ex.uid.rsplit("/", 1)[1])]
        label = ex.teacher_label
        if label_source == "teacher_vote":
            votes = [s.label if s.label is not None and benchmark.label_fits(s.label, ex) else None for s in own]
            label = majority_vote(votes, benchmark.score).label
            if label is None:
                counts["no_vote"] += 1
                continue
        if rationales == "first":  # the top-level shards' rationale (the vote's sample), as the paper reads it
            candidates = [Sample(0, ex.teacher_label, ex.rationale)] if ex.rationale else []
        else:
            candidates = [s for s in own if s.rationale]
        counts["candidates"] += len(candidates)
        if rationale_filter == "teacher_correct" and ex.gold is not None:
            kept = [s for s in candidates if s.label is not None and benchmark.score(s.label, ex.gold)]
        else:
            kept = candidates
        counts["filtered"] += len(candidates) - len(kept)
        counts["kept"] += len(kept)
        vote = label_source == "teacher_vote"
        if not kept:
            counts["label_only"] += 1
            rows.append(replace(ex, rationale=None, teacher_label=label))
        elif rationales == "first":
            rows.append(replace(ex, teacher_label=label))
        else:
            rows += [replace(ex, uid=f"{ex.uid}{SAMPLE_MARK}{s.index}", rationale=s.rationale,
                             teacher_label=label if vote else s.label, teacher_error=None) for s in kept]
    counts["rows"] = len(rows)
    counts["kept_share"] = counts["kept"] / counts["candidates"] if counts["candidates"] else None
    if not rows:
        raise DataError(f"no train examples left for {benchmark.name}: none of {len(train)} has a teacher vote "
                        "(data.label_source=teacher_vote)")
    return rows, counts
