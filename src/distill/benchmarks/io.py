"""Reading the official release layout, with errors that say which file and line is wrong.

Layout (the ``datasets.zip`` of google-research/distilling-step-by-step)::

    {data_dir}/{name}/{name}_{split}.json            one JSON object per line (JSON Lines)
    {data_dir}/{name}/{teacher}/{split}_CoT_{i}.json  a JSON array of raw teacher completions

The completions of shard 0, 1, 2, ... (numeric order: ``_CoT_10`` after ``_CoT_9``) line up one-to-one with
the lines of the split's JSON Lines file: a count mismatch, or shards sized otherwise than the layout's (every
shard ``shard_size`` long but the last), would attach rationales to the wrong inputs, so it is an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from distill.benchmarks.base import DataError

__all__ = ["records_path", "read_jsonl", "read_jsonl_numbered", "read_shard", "teacher_dir", "shard_glob",
           "shard_index", "shard_name", "shard_paths", "read_teacher_completions"]


def records_path(data_dir: str | Path, name: str, split: str) -> Path:
    """``{data_dir}/{name}/{name}_{split}.json``: the records of one file split."""
    return Path(data_dir) / name / f"{name}_{split}.json"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, blank lines skipped. Raises :class:`DataError` naming ``file:line``
    for malformed JSON or a line that is not an object, and the file when it does not exist."""
    return [record for _, record in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Like :func:`read_jsonl` but keeps each record's 1-based line number (for error messages)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: malformed JSON: {err.msg} (column {err.colno})") from err
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            out.append((line_no, record))
    return out


def shard_name(split: str, index: int) -> str:
    """The release's name of a split's completion shard ``index``: ``{split}_CoT_{index}.json``."""
    return f"{split}_CoT_{index}.json"


def shard_glob(split: str) -> str:
    """A glob for every shard file of a split (:func:`shard_name`)."""
    return f"{split}_CoT_*.json"


def shard_index(split: str, filename: str) -> int | None:
    """The index of a split's shard file name (:func:`shard_name`), None for any other name."""
    match = re.fullmatch(rf"{re.escape(split)}_CoT_(\d+)\.json", filename)
    return int(match.group(1)) if match else None


def teacher_dir(data_dir: str | Path, name: str, teacher: str) -> Path:
    """``{data_dir}/{name}/{teacher}``: where a teacher's completion shards live."""
    return Path(data_dir) / name / teacher


def shard_paths(data_dir: str | Path, name: str, teacher: str, split: str) -> list[Path]:
    """The completion shards of one split in numeric order; [] when there are none. A gap in the numbering
    is a :class:`DataError` (a missing shard would shift every later completion onto the wrong input)."""
    directory = teacher_dir(data_dir, name, teacher)
    if not directory.is_dir():
        return []
    numbered = sorted((index, path) for path in directory.iterdir()
                      if (index := shard_index(split, path.name)) is not None)
    numbers = [n for n, _ in numbered]
    if numbers and numbers != list(range(len(numbers))):
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise DataError(f"{directory}: teacher shards of split {split!r} must be numbered 0..N-1 without gaps; "
                        f"found {numbers}, missing {[shard_name(split, m) for m in missing]}")
    return [path for _, path in numbered]


def read_shard(path: Path) -> list[str]:
    """One shard: a JSON array of completion strings."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of completion strings, got {type(data).__name__}")
    for index, item in enumerate(data):
        if not isinstance(item, str):
            raise DataError(f"{path}: item {index} is {type(item).__name__}, expected a completion string")
    return data


def read_teacher_completions(data_dir: str | Path, name: str, teacher: str, split: str,
                             expected_rows: int | None = None,
                             records_file: str | Path | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """All completions of a split, concatenated over shards in numeric order, and ``origins[i] = (shard_path,
    index_in_shard)``: where completion ``i`` came from (for error messages and parse-failure reports).
    Raises :class:`DataError` when no shard exists, when ``expected_rows`` is given and the total differs
    (naming the shards, the records file and both counts), or when the shards are not all of one size but the
    last, which may hold fewer: even with the right total, that moves every later completion onto another row."""
    paths = shard_paths(data_dir, name, teacher, split)
    if not paths:
        raise DataError(f"{teacher_dir(data_dir, name, teacher) / shard_name(split, 0)}: no teacher completions for "
                        f"split {split!r} (expected shards {shard_name(split, 0)}, {shard_name(split, 1)}, ...)")
    shards = [read_shard(path) for path in paths]
    completions = [completion for shard in shards for completion in shard]
    origins = [(path, i) for path, shard in zip(paths, shards) for i in range(len(shard))]
    sizes = [len(shard) for shard in shards]
    if expected_rows is not None and len(completions) != expected_rows:
        where = f" in {records_file}" if records_file is not None else ""
        listed = ", ".join(f"{path} ({n})" for path, n in zip(paths, sizes))
        raise DataError(f"teacher shards hold {len(completions)} completions but there are {expected_rows} rows"
                        f"{where}; shards: {listed}")
    full = sizes[0]
    if not (all(n == full for n in sizes[:-1]) and sizes[-1] <= full):
        found = ", ".join(f"{path.name} ({n})" for path, n in zip(paths, sizes))
        raise DataError(
            f"{paths[0].parent}: the teacher shards of split {split!r} do not line up with its rows: every shard but "
            f"the last must hold the same number of completions ({paths[0].name} holds {full}) and the last no more; "
            f"found {found}. A shard of another size shifts every later completion onto the wrong row: rewrite the "
            f"shards (annotate.py writes shard_size per file)"
        )
    return completions, origins
