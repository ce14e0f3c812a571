"""Train/val/test examples of one benchmark, teacher outputs attached: :func:`build_splits`.

``split_files`` names the file of each split; ``val: null`` is a 10% holdout of train seeded by
``holdout_seed`` (fixed across fractions and seeds), and ``fraction`` then takes a nested seeded subset
of the rest. ``val_subset`` keeps a fixed random subset of val (drawn from ``holdout_seed``: the same for
every run). Test is read whole (``test_subset``: a fixed subset) and never chooses anything. The train
file needs the teacher where the method learns from rationales or ``label_source`` is a teacher's;
other files take it where it has shards. Misaligned shards, unparseable completions
(``on_parse_failure``) and drops are refused or counted, never silent (docs/data.md)."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.base import Benchmark, DataError, Example
from distill.benchmarks.io import (
    read_jsonl_numbered,
    read_teacher_completions,
    records_path,
    shard_paths,
    teacher_dir,
)
from distill.data.alignment import misaligned_parts
from distill.data.rationales import is_default, read_samples, select_rationales
from distill.methods import Method, get_method

log = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "LABEL_SOURCES",
    "PARSE_FAILURE_POLICIES",
    "MISALIGNED_TEACHER_POLICIES",
    "DEFAULT_SPLIT_FILES",
    "FileStats",
    "Splits",
    "load_file",
    "build_splits",
    "nested_subset",
    "holdout",
    "subset_size",
]

SPLITS = ("train", "val", "test")
LABEL_SOURCES = ("gold", "teacher", "teacher_vote")
#: label sources under which the student learns the teacher's labels
TEACHER_LABELS = ("teacher", "teacher_vote")
PARSE_FAILURE_POLICIES = ("drop_rationale", "drop_example", "error")
MISALIGNED_TEACHER_POLICIES = ("error", "warn")
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
    warnings: list[str] = field(default_factory=list)  # what the summary must show (e.g. misaligned shards)

    @property
    def teacher_accuracy(self) -> float | None:
        if self.teacher is None or self.rows == 0:
            return None
        return self.teacher_correct / self.rows


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


def reads_files(benchmark: Benchmark) -> bool:
    """Whether the benchmark's examples come from files (not made in code by ``generate``)."""
    return type(benchmark).generate is Benchmark.generate


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


def annotate_command(benchmark: Benchmark, data_dir: Path, file_split: str, teacher: str) -> str:
    """The ``annotate.py`` command that writes ``teacher``'s shards of ``file_split``."""
    from distill.benchmarks import REGISTRY

    data = (
        f"data={benchmark.name}"
        if benchmark.name in REGISTRY
        else f"data=jsonl data.benchmark.name={benchmark.name} <your data.benchmark settings>"
    )
    return (
        f"python annotate.py {data} split={file_split} paths.data_dir={data_dir} teacher=openai "
        f"teacher.backend.base_url=URL teacher.backend.model=MODEL teacher.name={teacher}"
    )


def missing_teacher_message(
    benchmark: Benchmark, data_dir: Path, file_split: str, teacher: str, needed_by: str
) -> str:
    return (
        f"{missing_teacher_note(benchmark, data_dir, file_split, teacher, needed_by)}\n"
        f"(or teacher=hf teacher.backend.model=PATH), point data.teacher at a teacher that has them, or train on gold "
        f"labels without rationales: method=standard data.label_source=gold"
    )


def missing_teacher_note(benchmark: Benchmark, data_dir: Path, file_split: str, teacher: str, needed_by: str) -> str:
    """Which shards of ``teacher`` are missing, why training needs them, and the command that writes them."""
    first = teacher_dir(data_dir, benchmark.name, teacher) / f"{file_split}_CoT_0.json"
    return (
        f"{first}: no completions of teacher {teacher!r} (data.teacher={teacher}) for file split {file_split!r}, "
        f"and {needed_by}. Write them with\n  {annotate_command(benchmark, data_dir, file_split, teacher)}"
    )


def load_file(
    benchmark: Benchmark,
    data_dir: str | Path,
    file_split: str,
    teacher: str | None = "llm",
    logical: str = "train",
    needed_by: str | None = "they were asked for",
    on_misaligned_teacher: str = "error",
) -> tuple[list[Example], FileStats]:
    """Read one file split: records -> examples, teacher completions parsed and attached.

    ``needed_by`` says why this file needs ``teacher``'s completions, in words for the error when
    there are none ("method step_by_step trains on the teacher's rationales"); None means they are
    optional: attached when the teacher has shards of this file, else the file has no teacher.
    Completions that agree with gold at chance level are an error, or a warning in
    ``FileStats.warnings`` with ``on_misaligned_teacher="warn"``.
    Benchmarks made in code return their examples from ``generate`` (teacher already attached).
    """
    if on_misaligned_teacher not in MISALIGNED_TEACHER_POLICIES:
        raise ValueError(
            f"data.on_misaligned_teacher must be one of {MISALIGNED_TEACHER_POLICIES}, got {on_misaligned_teacher!r}"
        )
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

    if teacher is not None and not shard_paths(data_dir, benchmark.name, teacher, file_split):
        if needed_by is not None:
            raise DataError(missing_teacher_message(benchmark, data_dir, file_split, teacher, needed_by))
        teacher = None
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
        _check_alignment(benchmark, examples, [shard.name for shard, _ in origins], stats, on_misaligned_teacher)
    elif any(e.rationale is not None or e.teacher_label is not None for e in examples):
        stats.teacher = "record"
    _count(benchmark, examples, stats)
    return examples, stats


def _check_alignment(
    benchmark: Benchmark, examples: list[Example], shard_of: list[str], stats: FileStats, policy: str
) -> None:
    parts = misaligned_parts(benchmark, examples, shard_of, Path(stats.path).name)
    if not parts:
        return
    findings = "; ".join(a.describe() for a in parts)
    message = (
        f"{findings}. Teacher labels at chance level against gold mean the completions do not belong to the rows "
        f"of {stats.path} (shards cut at the wrong places, records edited after annotation, another split's "
        f"shards?)"
    )
    if policy == "error":
        raise DataError(f"{message}. Check the shards, or go on anyway with data.on_misaligned_teacher=warn")
    log.warning("%s", message)
    stats.warnings.append(message)


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


def _check_configured_fields(benchmark: Benchmark, examples: list[Example], stats: FileStats) -> None:
    """A record field the benchmark was configured to read that no train record has is a typo."""
    for setting, name in benchmark.configured_fields().items():
        if not any(name in e.record for e in examples):
            present = sorted({key for e in examples for key in e.record})
            raise DataError(
                f"{stats.path}: data.benchmark.{setting}={name!r} names a field that no record has; "
                f"the records have {', '.join(present) or 'no fields'}"
            )


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


def subset_size(value: Any, setting: str) -> int | None:
    """``value`` as a count of examples: a positive int, or None (all of them); else a ValueError
    naming ``setting`` (e.g. ``data.val_subset``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{setting} must be a positive number of examples, or null for all of them; got {value!r}")
    return int(value)


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
    test_subset: int | None = None,
    val_subset: int | None = None,
    on_parse_failure: str = "drop_rationale",
    targets: str | Method | None = None,
    on_misaligned_teacher: str = "error",
    require_teacher: bool = True,
    load: Callable[..., tuple[Sequence[Example], FileStats]] | None = None,
    rationales: str = "first",
    rationale_filter: str = "none",
) -> Splits:
    """Read the files ``split_files`` names and build train/val/test (see the module doc).

    ``targets`` is the method the batches serve (a :mod:`distill.methods` name or Method); None
    (unknown) makes the train file need the teacher whenever one is named.
    ``test_subset`` (a count) tests on that many test examples, a subset fixed by ``holdout_seed``
    (the same for every run), in file order. ``val_subset`` does the same for val, from a random
    stream of its own (``[holdout_seed, 1]``): whatever ``seed``, ``fraction`` or method.
    ``require_teacher=False`` builds a report, not a training set: a train file the teacher has no
    shards of is read without it (and step_by_step without a rationale is no error); what a training
    run would need is in ``Splits.missing_teacher``. ``load`` reads one file as :func:`load_file`
    does (same arguments and results; the data module passes a cached one).
    """
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"data.label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    if on_parse_failure not in PARSE_FAILURE_POLICIES:
        raise ValueError(f"data.on_parse_failure must be one of {PARSE_FAILURE_POLICIES}, got {on_parse_failure!r}")
    val_subset = subset_size(val_subset, "data.val_subset")
    method = None if targets is None else get_method(targets)
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

    def file(file_split: str, logical: str, needed_by: str | None = None) -> list[Example]:
        if file_split not in loaded:
            examples, stats = (load or load_file)(
                benchmark, data_dir, file_split, teacher, logical, needed_by, on_misaligned_teacher
            )
            loaded[file_split] = (list(examples), stats)
        return loaded[file_split][0]

    missing_teacher: dict[str, str] = {}
    train_needs = _train_needs_teacher(method, label_source)
    if (
        not require_teacher
        and teacher is not None
        and train_needs is not None
        and reads_files(benchmark)
        and not shard_paths(data_dir, benchmark.name, teacher, train_file)
    ):
        missing_teacher[train_file] = missing_teacher_note(benchmark, Path(data_dir), train_file, teacher, train_needs)
        train_needs = None
    pool = file(train_file, "train", train_needs)
    _check_configured_fields(benchmark, pool, loaded[train_file][1])
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
    if val_subset is not None and val_subset < len(val):
        picked = sorted(np.random.default_rng([holdout_seed, 1]).permutation(len(val))[:val_subset].tolist())
        sources["val"] += f", a fixed random subset of {len(picked)} of {len(val)} (seed {holdout_seed})"
        val = [val[i] for i in picked]
    test = file(test_file, "test") if test_file is not None else []
    sources["test"] = f"{benchmark.name}_{test_file}" if test_file is not None else "none"
    if test_subset is not None and int(test_subset) < len(test):
        picked = sorted(np.random.default_rng(holdout_seed).permutation(len(test))[: int(test_subset)].tolist())
        sources["test"] += f", a fixed subset of {len(picked)} of {len(test)} (seed {holdout_seed})"
        test = [test[i] for i in picked]

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
    if label_source in TEACHER_LABELS and not missing_teacher:
        if teacher is None and not any(e.teacher_label is not None for e in train):
            raise DataError(f"data.label_source={label_source} needs teacher outputs: set data.teacher (e.g. llm)")
        # teacher_vote: an example leaves train when no sample votes (select_rationales counts it)
        kept = [e for e in train if e.teacher_label is not None] if label_source == "teacher" else train
    elif on_parse_failure == "drop_example":
        kept = [e for e in train if e.teacher_error is None]
    else:
        kept = train
    dropped["train"] = len(train) - len(kept)
    if not kept:
        raise DataError(f"no train examples left for {benchmark.name} after dropping {dropped['train']} unparseable")
    rationale_counts: dict[str, dict[str, Any]] = {}
    if not is_default(rationales, rationale_filter, label_source) and not missing_teacher:
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
            f"task alone: method=standard"
        )

    return Splits(
        train=kept,
        val=val,
        test=test,
        files={name: stats for name, (_, stats) in loaded.items()},
        sources=sources,
        dropped=dropped,
        label_source=label_source,
        missing_teacher=missing_teacher,
        rationale_counts=rationale_counts,
    )
