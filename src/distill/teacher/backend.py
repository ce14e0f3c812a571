"""A teacher backend turns :class:`Request` objects into answers, reporting each through :class:`Events` at once.
One bad item is an ``Answer`` with ``error`` set; only what would fail every item raises (TeacherConfigError)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distill.teacher.cache import Answer

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Request:
    key: str
    prompt: Prompt  # a completion prompt, or chat messages
    stop: tuple[str, ...] = ()
    sample: int = 0  # index among teacher.samples samples of the same prompt


class Events(Protocol):
    def answered(self, request: Request, answer: Answer) -> None:
        """A request is finished (answered, or failed for good)."""

    def retried(self, request: Request, reason: str) -> None:
        """An attempt failed and the request will be tried again."""


class TeacherConfigError(RuntimeError):
    """A failure that would hit every request alike (nothing at the URL, refused credentials, no model)."""


def reason_class(reason: str) -> str:
    """A short class of a failure reason, for counting ("HTTP 429", "timeout after 5s", ...)."""
    return reason.split(" (")[0].split(":")[0][:60]


def by_prompt(requests: Sequence[Request], prompt_of=lambda r: r.prompt) -> list[list[Request]]:
    """The requests grouped by prompt and stop sequences, in order of first appearance, each in sample order."""
    groups: dict[str, list[Request]] = {}
    for r in requests:
        groups.setdefault(repr((prompt_of(r), r.stop)), []).append(r)
    return [sorted(g, key=lambda r: r.sample) for g in groups.values()]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop sequence (exclusive), as OpenAI-compatible servers return it."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(found)] if found else text


class Backend(ABC):
    """A teacher. ``kind``, ``model`` and :meth:`sampling` go into every cache key."""

    kind: str
    model: str
    chat: bool
    #: stop sequences overriding the benchmark's (None: the benchmark's, []: none)
    stop: Sequence[str] | None

    @abstractmethod
    def sampling(self) -> dict[str, Any]:
        """Every generation parameter that changes the answer (temperature, max tokens, ...)."""

    @abstractmethod
    def generate(self, requests: Sequence[Request], events: Events) -> None:
        """Answer every request, reporting each outcome through ``events.answered`` exactly once."""

    def describe(self) -> str:
        return f"{self.kind}:{self.model}"
