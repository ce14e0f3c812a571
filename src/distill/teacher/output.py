"""Writing a teacher directory in the release layout (``{split}_CoT_{i}.json``, ``samples/{s}/``, a sidecar),
atomically: a reader sees the old file or the new one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from distill.benchmarks.io import shard_glob, shard_index, shard_name


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, and rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_completions(directory: Path, split: str, completions: Sequence[str], shard_size: int) -> list[Path]:
    """The shards of one split, then the removal of an earlier run's shards past the new count; their paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    paths = []
    for index, start in enumerate(range(0, max(len(completions), 1), shard_size)):
        paths.append(directory / shard_name(split, index))
        write_atomic(paths[-1], json.dumps(list(completions[start:start + shard_size]), ensure_ascii=False).encode())
    for stale in directory.iterdir():
        index = shard_index(split, stale.name)
        if index is not None and index >= len(paths):
            stale.unlink()
    fd = os.open(directory, os.O_RDONLY)  # the renames and removals are durable too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return paths


def write_teacher_dir(directory: Path, split: str, completions: Sequence[str], samples: Sequence[Sequence[str]],
                      sidecar: Iterable[dict[str, Any]], shard_size: int) -> list[Path]:
    """The shards, each sample's (``[sample][row]``; stale ones removed) and the sidecar; their paths."""
    paths = write_completions(directory, split, completions, shard_size)
    for s, texts in enumerate(samples):
        paths += write_completions(directory / "samples" / str(s), split, texts, shard_size)
    if (directory / "samples").is_dir():
        for sample in (directory / "samples").iterdir():
            if sample.name.isdigit() and int(sample.name) >= len(samples):
                for shard in sample.glob(shard_glob(split)):
                    shard.unlink()
    paths.append(directory / f"{split}_annotations.jsonl")
    write_atomic(paths[-1], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sidecar).encode())
    return paths
