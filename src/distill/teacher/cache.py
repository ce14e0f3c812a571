"""A durable, content-keyed store of teacher answers: a killed run loses nothing, a rerun asks only for the rest
(each answer is one flushed, fsync'ed ``write()`` to ``{writer}.jsonl``, one writer per file under ``flock``)."""

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

    def load(self, wanted: Iterable[str] | None = None) -> dict[str, Answer]:
        """Answers for ``wanted`` keys (None: all): an answer beats a failure, and the last answer read wins."""
        wanted = None if wanted is None else set(wanted)
        found: dict[str, Answer] = {}
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
                    ans = Answer(**{k: rec[k] for k in Answer.__dataclass_fields__ if k in rec})
                    prev = found.get(key)
                    if prev is None or ans.ok or not prev.ok:
                        found[key] = ans
        return found

    def open(self) -> AnswerCache:
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "ab+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise CacheBusyError(f"{self.path} is being written by another annotator process; give concurrent "
                                 "jobs distinct teacher.shard values") from None
        size = fh.seek(0, os.SEEK_END)
        if size and os.pread(fh.fileno(), 1, size - 1) != b"\n":  # a last line torn by a kill (rare): cut it, so
            fh.seek(0)  # the next append starts on a fresh line
            fh.truncate(fh.read().rfind(b"\n") + 1)
            fh.seek(0, os.SEEK_END)
        self._fh = fh
        return self

    def put(self, key: str, answer: Answer, **extra: Any) -> None:
        """Append one answer durably (one write, flush, fsync) before returning."""
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
