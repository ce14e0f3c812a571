"""Writing a teacher's answers in the official release layout, atomically, plus a sidecar.

``{out_dir}/{name}/{teacher}/{split}_CoT_{i}.json``: JSON arrays of raw completions, ``shard_size``
per file, in row order (what the data layer reads, shard 0, 1, 2, ... in numeric order).
``{split}_annotations.jsonl``: one JSON object per row with what the shards cannot hold
(uid, parse result, gold, errors, tokens, latency). ``{split}_report.json``: the run's account.

Each file is written to a temporary name in the same directory, fsync'ed and renamed over the
target, so a reader sees the old file or the new one, never half of one. Shards of an earlier
run beyond the new count are removed last (they would otherwise be read as extra rows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from distill.benchmarks.io import shard_index, shard_name

__all__ = ["shard_file", "write_atomic", "write_completions", "write_jsonl", "write_json"]


def shard_file(directory: Path, split: str, index: int) -> Path:
    return directory / shard_name(split, index)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_completions(directory: Path, split: str, completions: Sequence[str], shard_size: int) -> list[Path]:
    """The official shards of one split; returns their paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    paths = []
    for index, start in enumerate(range(0, max(len(completions), 1), shard_size)):
        path = shard_file(directory, split, index)
        chunk = list(completions[start:start + shard_size])
        write_atomic(path, json.dumps(chunk, ensure_ascii=False).encode("utf-8"))
        paths.append(path)
    for stale in directory.iterdir():
        index = shard_index(split, stale.name)
        if index is not None and index >= len(paths):
            stale.unlink()
    _fsync_dir(directory)
    return paths


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
