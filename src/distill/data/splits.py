"""Train/val/test splits as the paper builds them, with teacher outputs attached per example.

* Which file serves which split is config (``split_files``): ``{train: train, val: valid, test:
  test}`` for benchmarks with an official validation file, ``{train: train, val: null, test:
  test}`` otherwise. ``val: null`` (or ``val`` naming the same file as ``train``) means a seeded
  10% holdout of the train file (the paper's rule). So ``split_files.train=valid`` lets the
  official validation file serve as a small training set, with its own holdout as val.
* The holdout uses ``holdout_seed`` (fixed, 0 as in the official code) so val does not move
  between runs; ``fraction`` then subsamples the *remaining* train with ``seed``: one seeded
  permutation, take a prefix, so 12.5% is inside 25% is inside 50%. (The official code
  subsamples first and holds out 10% of the subsample, which moves val with the fraction.)
* Test is read whole: never subsampled, filtered or used for any choice.
* ``label_source``: ``gold`` trains on gold labels, ``teacher`` on the teacher's parsed labels
  (val/test always keep gold labels for evaluation).
* A teacher completion that cannot be parsed has no rationale. ``on_parse_failure``:
  ``drop_rationale`` (default) keeps the example's label task and drops its rationale task;
  ``drop_example`` drops the example from train; ``error`` raises. With ``label_source=teacher``
  such an example has no label to learn, so it leaves train whatever the setting. Every drop
  is counted and shown by the summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.base import Benchmark, DataError, Example
from distill.benchmarks.io import read_jsonl_numbered, read_teacher_completions, records_path

__all__ = [
    "SPLITS",
    "LABEL_SOURCES",
    "PARSE_FAILURE_POLICIES",
    "DEFAULT_SPLIT_FILES",
    "FileStats",
    "Splits",
    "load_file",
    "build_splits",
    "nested_subset",
    "holdout",
    "training_label",
]

SPLITS = ("train", "val", "test")
LABEL_SOURCES = ("gold", "teacher")
PARSE_FAILURE_POLICIES = ("drop_rationale", "drop_example", "error")
DEFAULT_SPLIT_FILES: dict[str, str | None] = {"train": "train", "val": None, "test": "test"}


@dataclass
class FileStats:
    """What one file split holds, measured before any split selection (the release's figures)."""

    file_split: str
    path: str
    rows: int
    teacher: str | None = None  # teacher name, "record" (rationales in the records), or None
    with_teacher_label: int = 0
    parse_failures: int = 0
    label_space_violations: int = 0  # parsed teacher labels outside the (item's) label space
    teacher_correct: int = 0  # teacher labels that score correct against gold
    failures: list[str] = field(default_factory=list)  # "shard#index: why", for reports

    @property
    def teacher_accuracy(self) -> float | None:
        if self.teacher is None or self.rows == 0:
            return None
        return self.teacher_correct / self.rows


@dataclass
class Splits:
    """The examples of each split, how each was built, and what was dropped."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    files: dict[str, FileStats]
    sources: dict[str, str]  # split -> how it was built, in words
    dropped: dict[str, int]  # split -> examples dropped (parse failures), never silent
    label_source: str = "gold"

    def __getitem__(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return getattr(self, split)


def training_label(example: Example, label_source: str) -> str | None:
    """The label the student learns for a train example under ``label_source``."""
    return example.teacher_label if label_source == "teacher" else example.gold


def _uid(name: str, file_split: str, index: int) -> str:
    return f"{name}/{file_split}/{index}"


def missing_file_message(path: Path, data_dir: Path, name: str, logical: str, file_split: str) -> str:
    directory = path.parent
    if not directory.is_dir():
        return (
            f"{path}: file not found; there is no {name}/ directory under data_dir={data_dir}. "
            f"Point paths.data_dir (or $DISTILL_DATA_DIR) at the release layout, or fetch it with "
            f"`python -m distill.data download --dir {data_dir}`."
        )
    present = sorted(
        p.name[len(name) + 1 : -len(".json")]
        for p in directory.glob(f"{name}_*.json")
        if p.is_file()
    )
    # never suggest the test file for train/val; the official validation file first
    alternatives = sorted((s for s in present if s not in (file_split, "test")), key=lambda s: s != "valid")
    suggestion = (
        f" Use another file for this split, e.g. data.split_files.{logical}={alternatives[0]}"
        if alternatives
        else ""
    )
    return (
        f"{path}: file not found (split {logical!r} reads file split {file_split!r} per "
        f"data.split_files.{logical}). Files present: {', '.join(f'{name}_{s}.json' for s in present) or 'none'}."
        f"{suggestion}"
        + (" (the val split then becomes a seeded holdout of that file)." if logical == "train" and suggestion else "")
    )


def load_file(
    benchmark: Benchmark,
    data_dir: str | Path,
    file_split: str,
    teacher: str | None = "llm",
    logical: str = "train",
) -> tuple[list[Example], FileStats]:
    """Read one file split: records -> examples, teacher completions parsed and attached.

    Benchmarks made in code return their examples from ``generate`` (teacher already attached).
    """
    data_dir = Path(data_dir)
    generated = benchmark.generate(file_split)
    if generated is not None:
        stats = FileStats(file_split=file_split, path=f"<generated by {type(benchmark).__name__}>", rows=len(generated))
        stats.teacher = teacher if any(e.teacher_label is not None or e.rationale is not None for e in generated) else None
        _count(benchmark, generated, stats)
        return list(generated), stats

    path = records_path(data_dir, benchmark.name, file_split)
    if not path.is_file():
        raise DataError(missing_file_message(path, data_dir, benchmark.name, logical, file_split))
    numbered = read_jsonl_numbered(path)
    examples: list[Example] = []
    for index, (line_no, record) in enumerate(numbered):
        try:
            example = benchmark.to_example(record, _uid(benchmark.name, file_split, index))
        except KeyError as err:
            detail = err.args[0] if err.args else ""
            # a bare key (record["label"]) or a benchmark's own sentence
            message = f"missing field {detail!r}" if isinstance(detail, str) and " " not in detail else str(detail)
            raise DataError(f"{path}:{line_no}: {message}") from err
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}:{line_no}: {err}") from err
        examples.append(example)
    stats = FileStats(file_split=file_split, path=str(path), rows=len(examples))

    if teacher is not None:
        completions, origins = read_teacher_completions(
            data_dir, benchmark.name, teacher, file_split, expected_rows=len(examples), records_file=path
        )
        for example, text, (shard, position) in zip(examples, completions, origins):
            parsed = benchmark.parse_completion(text)
            if parsed.ok:
                example.teacher_label = parsed.label
                example.rationale = parsed.rationale if parsed.rationale and parsed.rationale.strip() else None
                example.teacher_error = None
            else:
                example.teacher_label = None
                example.rationale = None
                example.teacher_error = f"{shard.name}#{position}: {parsed.error}"
        stats.teacher = teacher
    elif any(e.rationale is not None or e.teacher_label is not None for e in examples):
        stats.teacher = "record"
    _count(benchmark, examples, stats)
    return examples, stats


def _count(benchmark: Benchmark, examples: list[Example], stats: FileStats) -> None:
    for example in examples:
        if example.teacher_error is not None:
            stats.parse_failures += 1
            stats.failures.append(example.teacher_error)
            continue
        if example.teacher_label is None:
            continue
        stats.with_teacher_label += 1
        if not benchmark.label_fits(example.teacher_label, example):
            stats.label_space_violations += 1
        if example.gold is not None and benchmark.score(example.teacher_label, example.gold):
            stats.teacher_correct += 1


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


def build_splits(
    benchmark: Benchmark,
    data_dir: str | Path,
    teacher: str | None = "llm",
    split_files: Mapping[str, str | None] | None = None,
    label_source: str = "gold",
    fraction: float = 1.0,
    seed: int = 0,
    holdout_fraction: float = 0.1,
    holdout_seed: int = 0,
    on_parse_failure: str = "drop_rationale",
) -> Splits:
    """Read the files ``split_files`` names and build train/val/test (see the module doc)."""
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"data.label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    if on_parse_failure not in PARSE_FAILURE_POLICIES:
        raise ValueError(f"data.on_parse_failure must be one of {PARSE_FAILURE_POLICIES}, got {on_parse_failure!r}")
    mapping: dict[str, Any] = dict(DEFAULT_SPLIT_FILES)
    if split_files is not None:
        unknown = set(split_files) - set(SPLITS)
        if unknown:
            raise ValueError(f"data.split_files keys must be among {SPLITS}, got {sorted(unknown)}")
        mapping.update(split_files)
    train_file, val_file, test_file = mapping["train"], mapping["val"], mapping["test"]
    if not train_file:
        raise ValueError("data.split_files.train must name a file split")
    if test_file is not None and test_file in (train_file, val_file):
        raise DataError(
            f"data.split_files: test reads file split {test_file!r}, which also feeds train/val; "
            "test must stay apart (never select on test)"
        )

    loaded: dict[str, tuple[list[Example], FileStats]] = {}

    def file(file_split: str, logical: str) -> list[Example]:
        if file_split not in loaded:
            loaded[file_split] = load_file(benchmark, data_dir, file_split, teacher, logical)
        return loaded[file_split][0]

    pool = file(train_file, "train")
    sources: dict[str, str] = {}
    if val_file is None or val_file == train_file:
        keep, held = holdout(len(pool), holdout_fraction, holdout_seed)
        val = [pool[i] for i in held]
        pool = [pool[i] for i in keep]
        sources["val"] = f"{holdout_fraction:.0%} holdout of {benchmark.name}_{train_file} (seed {holdout_seed})"
        train_source = f"{benchmark.name}_{train_file} minus val holdout"
    else:
        val = file(val_file, "val")
        sources["val"] = f"{benchmark.name}_{val_file}"
        train_source = f"{benchmark.name}_{train_file}"
    test = file(test_file, "test") if test_file is not None else []
    sources["test"] = f"{benchmark.name}_{test_file}" if test_file is not None else "none"

    subset = nested_subset(len(pool), fraction, seed)
    train = [pool[i] for i in subset]
    if fraction < 1.0:
        train_source += f", fraction {fraction:g} (seed {seed}): {len(train)} of {len(pool)}"
    sources["train"] = train_source

    dropped = {split: 0 for split in SPLITS}
    failures = [e for e in train if e.teacher_error is not None]
    if failures and on_parse_failure == "error":
        shown = "; ".join(f"{e.uid} ({e.teacher_error})" for e in failures[:5])
        raise DataError(
            f"{len(failures)} train teacher completion(s) could not be parsed (data.on_parse_failure=error): {shown}"
        )
    if label_source == "teacher":
        if teacher is None and not any(e.teacher_label is not None for e in train):
            raise DataError("data.label_source=teacher needs teacher outputs: set data.teacher (e.g. llm)")
        kept = [e for e in train if e.teacher_label is not None]
    elif on_parse_failure == "drop_example":
        kept = [e for e in train if e.teacher_error is None]
    else:
        kept = train
    dropped["train"] = len(train) - len(kept)
    if not kept:
        raise DataError(f"no train examples left for {benchmark.name} after dropping {dropped['train']} unparseable")

    return Splits(
        train=kept,
        val=val,
        test=test,
        files={name: stats for name, (_, stats) in loaded.items()},
        sources=sources,
        dropped=dropped,
        label_source=label_source,
    )
