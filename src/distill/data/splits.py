"""Train/val/test examples of one benchmark, teacher outputs attached (:func:`build_splits`, docs/data.md).
``split_files`` names the file of each split; ``val: null`` is a holdout of train seeded by ``holdout_seed``
(fixed across fractions and seeds), and ``fraction`` takes a nested seeded subset of the rest. ``val_subset``
and ``test_subset`` keep fixed random subsets (from ``holdout_seed``: the same for every run); test never
chooses anything. The train file needs the teacher where the method learns from rationales or the teacher's
labels; other files take it where it has shards. Unparseable completions and drops are refused or counted."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.base import Benchmark, DataError, Example
from distill.benchmarks.io import shard_paths
from distill.data.files import (FileStats, annotate_command, check_configured_fields, load_file, missing_teacher_note,
                                reads_files)
from distill.data.rationales import read_samples, select_rationales
from distill.data.targets import TEACHER_LABELS
from distill.methods import Method, get_method

__all__ = ["SPLITS", "LABEL_SOURCES", "PARSE_FAILURE_POLICIES", "FileStats", "Splits", "build_splits", "fixed_subset",
           "holdout", "load_file", "nested_subset", "subset_size"]

SPLITS = ("train", "val", "test")
LABEL_SOURCES = ("gold", *TEACHER_LABELS)
PARSE_FAILURE_POLICIES = ("drop_rationale", "drop_example", "error")


@dataclass
class Splits:
    """The examples of each split, how each was built, and what was dropped. The splits are lists, or
    :class:`distill.data.cache.ExampleTable` sequences where they were read back from the data cache."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    files: dict[str, FileStats]
    sources: dict[str, str]  # split -> how it was built, in words
    dropped: dict[str, int]  # split -> examples dropped (parse failures), never silent
    label_source: str = "gold"
    #: file split -> what a training run would need from the teacher it lacks (require_teacher=False only)
    missing_teacher: dict[str, str] = field(default_factory=dict)
    #: split -> the account of :func:`distill.data.rationales.select_rationales` (train, outside the defaults)
    rationale_counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return getattr(self, split)


def holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (keep, held_out) with a seeded permutation; both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise DataError(f"cannot hold out a validation split from {n} train example(s)")
    n_val = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def nested_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Indices of a ``fraction`` of ``range(n)``: the prefix of one seeded permutation, so a
    smaller fraction is always inside a larger one under the same seed. Sorted."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(range(n))
    k = max(1, round(fraction * n)) if n else 0
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[:k].tolist())


def subset_size(value: Any, setting: str) -> int | None:
    """``value`` as a count of examples: a positive int, or None (all of them); else a ValueError
    naming ``setting`` (e.g. ``data.val_subset``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{setting} must be a positive number of examples, or null for all of them; got {value!r}")
    return int(value)


def fixed_subset(examples: Sequence[Example], size: int | None, seed: int, *stream: int) -> Sequence[Example]:
    """The first ``size`` of a permutation of ``examples`` drawn from ``[seed, *stream]``, in file order;
    ``examples`` themselves where ``size`` keeps them all (None, or not below their number)."""
    if size is None or size >= len(examples):
        return examples
    picked = sorted(np.random.default_rng([seed, *stream]).permutation(len(examples))[:size].tolist())
    return [examples[i] for i in picked]


def _file_splits(split_files: Mapping[str, str | None] | None) -> tuple[str, str | None, str | None]:
    """(train, val, test) file splits: ``split_files`` over the defaults; test apart from train and val."""
    mapping: dict[str, Any] = {"train": "train", "val": None, "test": "test"}
    unknown = set(split_files or ()) - set(SPLITS)
    if unknown:
        raise ValueError(f"data.split_files keys must be among {SPLITS}, got {sorted(unknown)}")
    mapping.update(split_files or {})
    train, val, test = mapping["train"], mapping["val"], mapping["test"]
    if not train:
        raise ValueError("data.split_files.train must name a file split")
    if test is not None and test in (train, val):
        raise DataError(f"data.split_files: test reads file split {test!r}, which also feeds train/val; "
                        "test must stay apart (never select on test)")
    return train, val, test


def _train_needs_teacher(method: Method | None, label_source: str) -> str | None:
    """Why the train file needs the teacher's completions, or None when training uses neither its
    rationales nor its labels."""
    if label_source in TEACHER_LABELS:
        return f"data.label_source={label_source} trains on the teacher's labels"
    if method is None:
        return "the train split reads them"
    if method.needs_rationales:
        return f"method {method.name} trains on the teacher's rationales"
    return None


def _labelled_train(train: list[Example], label_source: str, on_parse_failure: str, teacher: str | None,
                    check_teacher: bool) -> list[Example]:
    """The train examples that keep a label as ``label_source`` and ``on_parse_failure`` say."""
    failures = [e for e in train if e.teacher_error is not None]
    if failures and on_parse_failure == "error":
        shown = "; ".join(f"{e.uid} ({e.teacher_error})" for e in failures[:5])
        raise DataError(
            f"{len(failures)} train teacher completion(s) could not be parsed (data.on_parse_failure=error): {shown}")
    if label_source in TEACHER_LABELS and check_teacher:
        if teacher is None and not any(e.teacher_label is not None for e in train):
            raise DataError(f"data.label_source={label_source} needs teacher outputs: set data.teacher (e.g. llm)")
        # teacher_vote: an example leaves train when no sample votes (select_rationales counts it)
        return [e for e in train if e.teacher_label is not None] if label_source == "teacher" else train
    if on_parse_failure == "drop_example":
        return [e for e in train if e.teacher_error is None]
    return train


def build_splits(
    benchmark: Benchmark, data_dir: str | Path, teacher: str | None = "llm",
    split_files: Mapping[str, str | None] | None = None, label_source: str = "gold", fraction: float = 1.0,
    seed: int = 0, holdout_fraction: float = 0.1, holdout_seed: int = 0, test_subset: int | None = None,
    val_subset: int | None = None, on_parse_failure: str = "drop_rationale", targets: str | Method | None = None,
    on_misaligned_teacher: str = "error", require_teacher: bool = True,
    load: Callable[..., tuple[Sequence[Example], FileStats]] | None = None, rationales: str = "first",
    rationale_filter: str = "none",
) -> Splits:
    """Read the files ``split_files`` names and build train/val/test (defaults: ``conf/data/_base.yaml``'s).
    ``targets``: the method the batches serve (None: the train file needs any teacher named).
    ``require_teacher=False`` builds a report: a train file the teacher has no shards of is read without it
    (what a run would need is in ``Splits.missing_teacher``). ``load``: :func:`load_file` or a cached one."""
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"data.label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    if on_parse_failure not in PARSE_FAILURE_POLICIES:
        raise ValueError(f"data.on_parse_failure must be one of {PARSE_FAILURE_POLICIES}, got {on_parse_failure!r}")
    val_subset = subset_size(val_subset, "data.val_subset")
    test_subset = subset_size(test_subset, "data.test_subset")
    method = None if targets is None else get_method(targets)
    train_file, val_file, test_file = _file_splits(split_files)
    loaded: dict[str, tuple[list[Example], FileStats]] = {}

    def file(file_split: str, logical: str, needed_by: str | None = None) -> list[Example]:
        if file_split not in loaded:
            examples, stats = (load or load_file)(
                benchmark, data_dir, file_split, teacher, logical, needed_by, on_misaligned_teacher)
            loaded[file_split] = (list(examples), stats)
        return loaded[file_split][0]

    missing_teacher: dict[str, str] = {}
    train_needs = _train_needs_teacher(method, label_source)
    if (not require_teacher and teacher is not None and train_needs is not None and reads_files(benchmark)
            and not shard_paths(data_dir, benchmark.name, teacher, train_file)):
        missing_teacher[train_file] = missing_teacher_note(benchmark, Path(data_dir), train_file, teacher, train_needs)
        train_needs = None
    pool = file(train_file, "train", train_needs)
    check_configured_fields(benchmark, pool, loaded[train_file][1])
    sources: dict[str, str] = {}
    if val_file is None or val_file == train_file:
        keep, held = holdout(len(pool), holdout_fraction, holdout_seed)
        val, pool = [pool[i] for i in held], [pool[i] for i in keep]
        sources["val"] = f"{holdout_fraction:.0%} holdout of {benchmark.name}_{train_file} (seed {holdout_seed})"
        train_source = f"{benchmark.name}_{train_file} minus val holdout"
    else:
        val = file(val_file, "val")
        sources["val"] = f"{benchmark.name}_{val_file}"
        train_source = f"{benchmark.name}_{train_file}"
    test = file(test_file, "test") if test_file is not None else []
    sources["test"] = f"{benchmark.name}_{test_file}" if test_file is not None else "none"
    # one fixed subset per split for every run: test's drawn from holdout_seed, val's from a stream of its own
    chosen = {"val": fixed_subset(val, val_subset, holdout_seed, 1),
              "test": fixed_subset(test, test_subset, holdout_seed)}
    for split, whole, kind in (("val", val, "fixed random subset"), ("test", test, "fixed subset")):
        if len(chosen[split]) < len(whole):
            sources[split] += f", a {kind} of {len(chosen[split])} of {len(whole)} (seed {holdout_seed})"
    val, test = chosen["val"], chosen["test"]

    train = [pool[i] for i in nested_subset(len(pool), fraction, seed)]
    if fraction < 1.0:
        train_source += f", fraction {fraction:g} (seed {seed}): {len(train)} of {len(pool)}"
    sources["train"] = train_source

    dropped = {split: 0 for split in SPLITS}
    kept = _labelled_train(train, label_source, on_parse_failure, teacher, check_teacher=not missing_teacher)
    dropped["train"] = len(train) - len(kept)
    if not kept:
        raise DataError(f"no train examples left for {benchmark.name} after dropping {dropped['train']} unparseable")
    rationale_counts: dict[str, dict[str, Any]] = {}
    if not missing_teacher and ((rationales, rationale_filter) != ("first", "none") or label_source == "teacher_vote"):
        samples = None
        if teacher is not None and reads_files(benchmark):
            samples = read_samples(benchmark, data_dir, teacher, train_file, loaded[train_file][1].rows)
        if samples is None and (rationales != "first" or label_source == "teacher_vote"):
            asked = f"data.rationales={rationales}" if rationales != "first" else "data.label_source=teacher_vote"
            raise DataError(
                f"{asked} needs several teacher samples per example, but teacher {teacher!r} (data.teacher) has "
                f"no per-sample shard sets of {benchmark.name}_{train_file} "
                f"({Path(data_dir) / benchmark.name / str(teacher) / 'samples' / '0' / f'{train_file}_CoT_0.json'} "
                f"is missing): write them with\n  {annotate_command(benchmark, Path(data_dir), train_file, 'T')} "
                f"teacher.samples=4 teacher.backend.temperature=0.7\nand train with data.teacher=T")
        kept, rationale_counts["train"] = select_rationales(
            benchmark, kept, samples, rationales, rationale_filter, label_source)
        dropped["train"] += rationale_counts["train"]["no_vote"]
    if method is not None and method.rationale_task and not missing_teacher and not any(e.rationale for e in kept):
        stats = loaded[train_file][1]
        raise DataError(
            f"method={method.name} learns from rationales, but none of the {len(kept)} train examples of "
            f"{stats.path} has a rationale (teacher: {stats.teacher or 'none'}, data.teacher={teacher}; "
            f"{stats.parse_failures} completion(s) did not parse). Attach rationales (data.teacher=NAME with "
            f"shards from annotate.py, or data.benchmark.rationale_field for a jsonl task), or train the label "
            f"task alone: method=standard")
    return Splits(train=kept, val=val, test=test, files={name: stats for name, (_, stats) in loaded.items()},
                  sources=sources, dropped=dropped, label_source=label_source, missing_teacher=missing_teacher,
                  rationale_counts=rationale_counts)
