"""A durable, content-keyed store of teacher answers.

Why this shape: a teacher run can take hours and be killed at any moment (SLURM time limit,
pre-emption, Ctrl-C). Every answer is appended to a JSON Lines file with a single ``write()``
and flushed (and, by default, fsync'ed) before the next one, so a killed run loses nothing it
already has, and a rerun asks only for keys the store lacks. Keys hash everything that
determines an answer (prompt, model, sampling parameters, sample index), so the store is
correct whatever the row order, slicing or sharding of the run that reads it.

One file per writer (``{writer}.jsonl`` under one directory): the jobs of a SLURM array each
append to their own file on a shared filesystem and never contend; readers merge every file
of the directory. A writer holds an exclusive ``flock`` on its file, so two processes never
interleave lines in one file. A line torn by a kill is ignored on reading and cut off before
the next append.

Per key, an answer beats a recorded failure; among several answers (a nondeterministic
teacher asked twice), the last one read (files in name order, lines in order) wins.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def request_key(payload: Mapping[str, Any]) -> str:
    """A stable hash of what determines a teacher answer (canonical JSON, SHA-256)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Answer:
    """The outcome of one teacher request: a completion, or why there is none."""

    text: str | None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 1
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Answer:
        return cls(**{k: rec.get(k) for k in cls.__dataclass_fields__ if k in rec})


class CacheBusyError(RuntimeError):
    """Another process is writing the same cache file."""


class AnswerCache:
    """Answers by key, read from every ``*.jsonl`` in ``directory``, appended to ``{writer}.jsonl``."""

    def __init__(self, directory: str | Path, writer: str, fsync: bool = True):
        self.directory = Path(directory)
        self.path = self.directory / f"{writer}.jsonl"
        self.fsync = fsync
        self._fh = None
        self.torn_lines = 0

    # ----------------------------------------------------------------- reading
    def load(self, wanted: Iterable[str] | None = None) -> dict[str, Answer]:
        """Answers for ``wanted`` keys (all keys when None) from every file of the directory."""
        wanted = None if wanted is None else set(wanted)
        found: dict[str, Answer] = {}
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*.jsonl")):
            with open(path, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    try:
                        rec = json.loads(raw)
                        key = rec["key"]
                    except (ValueError, KeyError, TypeError):
                        # only a kill mid-write makes such a line, and only as a file's last line
                        self.torn_lines += 1
                        log.warning("%s:%d: ignoring an unreadable cache line (torn by a kill?)", path, lineno)
                        continue
                    if wanted is not None and key not in wanted:
                        continue
                    ans = Answer.from_record(rec)
                    prev = found.get(key)
                    if prev is None or ans.ok or not prev.ok:
                        found[key] = ans
        return found

    # ----------------------------------------------------------------- writing
    def open(self) -> AnswerCache:
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "ab+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise CacheBusyError(
                f"{self.path} is being written by another annotator process; "
                "give concurrent jobs distinct teacher.shard values"
            ) from None
        self._repair_tail(fh)
        self._fh = fh
        return self

    @staticmethod
    def _repair_tail(fh) -> None:
        """Cut a last line torn by a kill, so the next append starts on a fresh line."""
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(4096, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        fh.truncate(pos)
        fh.seek(0, os.SEEK_END)

    def put(self, key: str, answer: Answer, **extra: Any) -> None:
        """Append one answer durably (one write, flush, fsync) before returning."""
        if self._fh is None:
            raise RuntimeError("AnswerCache.put before open()")
        rec = {"key": key, **asdict(answer), **extra, "time": round(time.time(), 3)}
        self._fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the flock
            self._fh = None

    def __enter__(self) -> AnswerCache:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
