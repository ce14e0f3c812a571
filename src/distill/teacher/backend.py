"""What a teacher backend is: something that turns prompts into completions.

The annotator builds :class:`Request` objects (a cache key, a prompt, stop sequences),
hands the ones its cache lacks to :meth:`Backend.generate`, and hears about each outcome
through :class:`Events` as soon as it is known, so it can store it durably right away.
A backend never raises for one bad item: it reports an :class:`~distill.teacher.cache.Answer`
with ``error`` set. It raises :class:`TeacherConfigError` only for problems no retry can fix
(wrong URL, refused credentials), which would fail every item alike.
"""

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
    sample: int = 0  # index among teacher.num_samples samples of the same prompt


class Events(Protocol):
    def answered(self, request: Request, answer: Answer) -> None:
        """A request is finished (answered, or failed for good)."""

    def retried(self, request: Request, reason: str) -> None:
        """An attempt failed and the request will be tried again."""


class TeacherConfigError(RuntimeError):
    """A failure that would hit every request alike (bad URL, refused credentials, no model)."""


def reason_class(reason: str) -> str:
    """A short class of a failure reason, for counting ("HTTP 429", "timeout after 5s", ...)."""
    return reason.split(" (")[0].split(":")[0][:60]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop sequence (exclusive), as OpenAI-compatible servers return it."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


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
