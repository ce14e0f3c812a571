"""One file split read as examples: records parsed by the benchmark, the teacher's completions parsed and
attached (:func:`load_file`), and what the file holds (:class:`FileStats`: the release's figures). The
messages for a missing file or missing teacher shards name the command that fixes them.

Do the completions belong to the file's rows? Completions on the wrong rows (shards cut at the wrong places,
records edited after annotation, another split's shards) still parse, but then agree with their own row's
gold no more often than with any other row's. So, over the rows whose completion parsed, ``own`` (the share
of teacher labels right against their own row's gold) is compared with ``others`` (against the gold of other
rows, paired by a few seeded shuffles: chance, whatever the label space). A file, and each of its shards, is
judged with at least :data:`MIN_ROWS` parsed rows, where most completions parse; it is misaligned (an error,
or a warning) when ``own`` is within ``max(MARGIN, 2 standard errors)`` of ``others``. On the release ``own``
is 0.66 (anli1) to 0.77 (cqa) against ``others`` of 0.34 (NLI) or near 0."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.benchmarks.base import Benchmark, DataError, Example
from distill.benchmarks.io import (read_jsonl_numbered, read_teacher_completions, records_path, shard_paths,
                                   teacher_dir)

log = logging.getLogger(__name__)

__all__ = ["MISALIGNED_TEACHER_POLICIES", "FileStats", "annotate_command", "check_configured_fields", "load_file",
           "missing_teacher_note", "reads_files", "teacher_counts"]

MISALIGNED_TEACHER_POLICIES = ("error", "warn")
#: fewer parsed rows than this: too few to judge
MIN_ROWS = 50
#: judge only where at least this share of the completions parse
MIN_PARSED_SHARE = 0.5
#: the least gap between own and chance agreement that a teacher of any use shows
MARGIN = 0.05
#: seeded shuffles that pair each teacher label with another row's gold
SHUFFLES = 3


@dataclass
class FileStats:
    """What one file split holds, measured before any split selection (the release's figures)."""

    file_split: str
    path: str
    rows: int
    teacher: str | None = None  # teacher name, "record" (rationales in the records), or None
    parse_failures: int = 0
    label_space_violations: int = 0  # parsed teacher labels outside the (item's) label space
    teacher_correct: int = 0  # teacher labels that score correct against gold
    failures: list[str] = field(default_factory=list)  # "shard#index: why", for reports
    warnings: list[str] = field(default_factory=list)  # what the summary must show (e.g. misaligned shards)

    @property
    def teacher_accuracy(self) -> float | None:
        return None if self.teacher is None or self.rows == 0 else self.teacher_correct / self.rows


def reads_files(benchmark: Benchmark) -> bool:
    """Whether the benchmark's examples come from files (not made in code by ``generate``)."""
    return type(benchmark).generate is Benchmark.generate


def missing_file_message(path: Path, data_dir: Path, name: str, logical: str, file_split: str) -> str:
    """What is there instead of a missing records file, and which setting reads another."""
    directory = path.parent
    if not directory.is_dir():
        return (f"{path}: file not found; there is no {name}/ directory under data_dir={data_dir}. "
                f"Point paths.data_dir (or $DISTILL_DATA_DIR) at the release layout, or fetch it with "
                f"`python -m distill.data download --dir {data_dir}`.")
    present = sorted(p.name[len(name) + 1 : -len(".json")] for p in directory.glob(f"{name}_*.json") if p.is_file())
    # never suggest the test file for train/val; the official validation file first
    alternatives = sorted((s for s in present if s not in (file_split, "test")), key=lambda s: s != "valid")
    suggestion = (f" Use another file for this split, e.g. data.split_files.{logical}={alternatives[0]}"
                  if alternatives else "")
    return (
        f"{path}: file not found (split {logical!r} reads file split {file_split!r} per "
        f"data.split_files.{logical}). Files present: {', '.join(f'{name}_{s}.json' for s in present) or 'none'}."
        f"{suggestion}"
        + (" (the val split then becomes a seeded holdout of that file)." if logical == "train" and suggestion else "")
    )


def annotate_command(benchmark: Benchmark, data_dir: Path, file_split: str, teacher: str) -> str:
    """The ``annotate.py`` command that writes ``teacher``'s shards of ``file_split``."""
    from distill.benchmarks import REGISTRY

    data = (f"data={benchmark.name}" if benchmark.name in REGISTRY
            else f"data=jsonl data.benchmark.name={benchmark.name} <your data.benchmark settings>")
    return (f"python annotate.py {data} split={file_split} paths.data_dir={data_dir} teacher=openai "
            f"teacher.backend.base_url=URL teacher.backend.model=MODEL teacher.name={teacher}")


def missing_teacher_note(benchmark: Benchmark, data_dir: Path, file_split: str, teacher: str, needed_by: str) -> str:
    """Which shards of ``teacher`` are missing, why training needs them, and the command that writes them."""
    first = teacher_dir(data_dir, benchmark.name, teacher) / f"{file_split}_CoT_0.json"
    return (f"{first}: no completions of teacher {teacher!r} (data.teacher={teacher}) for file split {file_split!r}, "
            f"and {needed_by}. Write them with\n  {annotate_command(benchmark, data_dir, file_split, teacher)}")


def load_file(benchmark: Benchmark, data_dir: str | Path, file_split: str, teacher: str | None = "llm",
              logical: str = "train", needed_by: str | None = "they were asked for",
              on_misaligned_teacher: str = "error") -> tuple[list[Example], FileStats]:
    """Read one file split: records -> examples, teacher completions parsed and attached. ``needed_by`` says
    why this file needs ``teacher``'s completions, in words for the error when there are none; None: they
    are optional (attached where the teacher has shards of this file). Completions that agree with gold at
    chance level are an error, or with ``on_misaligned_teacher="warn"`` a warning in ``FileStats.warnings``.
    Benchmarks made in code return their examples from ``generate`` (teacher already attached)."""
    if on_misaligned_teacher not in MISALIGNED_TEACHER_POLICIES:
        raise ValueError(f"data.on_misaligned_teacher must be one of {MISALIGNED_TEACHER_POLICIES}, "
                         f"got {on_misaligned_teacher!r}")
    data_dir = Path(data_dir)
    generated = benchmark.generate(file_split)
    if generated is not None:
        taught = any(e.teacher_label is not None or e.rationale is not None for e in generated)
        stats = FileStats(file_split, f"<generated by {type(benchmark).__name__}>", len(generated),
                          teacher if taught else None)
        _count(benchmark, generated, stats)
        return list(generated), stats

    path = records_path(data_dir, benchmark.name, file_split)
    if not path.is_file():
        raise DataError(missing_file_message(path, data_dir, benchmark.name, logical, file_split))
    examples: list[Example] = []
    for index, (line_no, record) in enumerate(read_jsonl_numbered(path)):
        try:
            example = benchmark.to_example(record, f"{benchmark.name}/{file_split}/{index}")
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
            raise DataError(
                f"{missing_teacher_note(benchmark, data_dir, file_split, teacher, needed_by)}\n(or teacher=hf "
                f"teacher.backend.model=PATH), point data.teacher at a teacher that has them, or train on gold "
                f"labels without rationales: method=standard data.label_source=gold")
        teacher = None
    if teacher is not None:
        completions, origins = read_teacher_completions(data_dir, benchmark.name, teacher, file_split,
                                                        expected_rows=len(examples), records_file=path)
        for example, text, (shard, position) in zip(examples, completions, origins):
            parsed = benchmark.parse_completion(text)
            ok = parsed.ok
            example.teacher_label = parsed.label if ok else None
            example.rationale = parsed.rationale if ok and parsed.rationale and parsed.rationale.strip() else None
            example.teacher_error = None if ok else f"{shard.name}#{position}: {parsed.error}"
        stats.teacher = teacher
        _check_alignment(benchmark, examples, [shard.name for shard, _ in origins], stats, on_misaligned_teacher)
    elif any(e.rationale is not None or e.teacher_label is not None for e in examples):
        stats.teacher = "record"
    _count(benchmark, examples, stats)
    return examples, stats


def agreement(benchmark: Benchmark, examples: Sequence[Example]) -> tuple[int, float, float]:
    """``(parsed, own, others)``: the rows with a parsed teacher label and a gold label, and how often those
    labels score right against their own rows' gold and against other rows' (seeded shuffles: chance)."""
    pairs = [(e.teacher_label, e.gold) for e in examples if e.teacher_label is not None and e.gold is not None]
    n = len(pairs)
    if n < 2:
        return n, 0.0, 0.0
    own = sum(benchmark.score(label, gold) for label, gold in pairs) / n
    rng = np.random.default_rng(0)
    others = sum(benchmark.score(label, pairs[j][1]) for _ in range(SHUFFLES)
                 for (label, _), j in zip(pairs, rng.permutation(n).tolist())) / (n * SHUFFLES)
    return n, own, others


def _check_alignment(benchmark: Benchmark, examples: list[Example], shard_of: list[str], stats: FileStats,
                     policy: str) -> None:
    """Refuse (or with ``policy="warn"`` report) the parts (each shard, and the whole file when it has
    several) judged to agree with their own rows' gold at chance level; ``shard_of[i]``: ``examples[i]``'s shard."""
    parts: dict[str, list[Example]] = {}
    for example, shard in zip(examples, shard_of):
        parts.setdefault(shard, []).append(example)
    if len(parts) > 1:
        parts[Path(stats.path).name] = examples
    findings = []
    for part, rows in parts.items():
        parsed, own, others = agreement(benchmark, rows)
        judged = parsed >= MIN_ROWS and parsed >= MIN_PARSED_SHARE * len(rows)
        spread = math.sqrt(others * (1.0 - others) / parsed) if parsed else 0.0
        if judged and own <= others + max(MARGIN, 2.0 * spread):
            findings.append(f"{part}: the teacher's labels score right against their own rows' gold on {own:.3f} of "
                            f"{parsed} parsed rows, and against other rows' gold on {others:.3f} (chance)")
    if not findings:
        return
    message = (
        f"{'; '.join(findings)}. Teacher labels at chance level against gold mean the completions do not belong to "
        f"the rows of {stats.path} (shards cut at the wrong places, records edited after annotation, another "
        f"split's shards?)"
    )
    if policy == "error":
        raise DataError(f"{message}. Check the shards, or go on anyway with data.on_misaligned_teacher=warn")
    log.warning("%s", message)
    stats.warnings.append(message)


def check_configured_fields(benchmark: Benchmark, examples: list[Example], stats: FileStats) -> None:
    """A record field the benchmark was configured to read that no train record has is a typo."""
    for setting, name in benchmark.configured_fields().items():
        if not any(name in e.record for e in examples):
            present = sorted({key for e in examples for key in e.record})
            raise DataError(f"{stats.path}: data.benchmark.{setting}={name!r} names a field that no record has; "
                            f"the records have {', '.join(present) or 'no fields'}")


def teacher_counts(benchmark: Benchmark, examples: Sequence[Example]) -> dict[str, int]:
    """Over ``examples`` (one pass: they may be read back from the cache): ``rows``, ``failures`` (parse
    failures), ``parsed`` teacher labels, those ``correct`` against gold and ``outside`` the label space, and
    ``rationales``."""
    counts = dict.fromkeys(("rows", "failures", "parsed", "correct", "outside", "rationales"), 0)
    for e in examples:
        counts["rows"] += 1
        counts["failures"] += e.teacher_error is not None
        counts["rationales"] += e.rationale is not None
        if e.teacher_label is not None:
            counts["parsed"] += 1
            counts["correct"] += bool(e.gold is not None and benchmark.score(e.teacher_label, e.gold))
            counts["outside"] += not benchmark.label_fits(e.teacher_label, e)
    return counts


def _count(benchmark: Benchmark, examples: list[Example], stats: FileStats) -> None:
    counts = teacher_counts(benchmark, examples)
    stats.parse_failures, stats.label_space_violations = counts["failures"], counts["outside"]
    stats.teacher_correct = counts["correct"]
    stats.failures = [e.teacher_error for e in examples if e.teacher_error is not None]
