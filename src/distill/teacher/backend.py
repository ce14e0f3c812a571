"""What a teacher backend is: something that turns prompts into completions.

The annotator builds :class:`Request` objects (a cache key, a prompt, stop sequences),
hands the ones its cache lacks to :meth:`Backend.generate`, and hears about each outcome
through :class:`Events` as soon as it is known, so it can store it durably right away.
A backend never raises for one bad item: it reports an :class:`~distill.teacher.cache.Answer`
with ``error`` set. It raises :class:`TeacherConfigError` only for problems no retry can fix
(wrong URL, refused credentials), which would fail every item alike, and
:class:`TeacherUnreachable` when the first requests of a run all fail alike
(:class:`FailFast`): a teacher that is not there is reported in seconds, not after every item
of a split has been retried.
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
    sample: int = 0  # index among teacher.samples samples of the same prompt


class Events(Protocol):
    def answered(self, request: Request, answer: Answer) -> None:
        """A request is finished (answered, or failed for good)."""

    def retried(self, request: Request, reason: str) -> None:
        """An attempt failed and the request will be tried again."""


class TeacherConfigError(RuntimeError):
    """A failure that would hit every request alike (bad URL, refused credentials, no model)."""


class TeacherUnreachable(TeacherConfigError):
    """The first requests of a run all failed alike: nothing answers at the URL, or it refuses everything."""


def reason_class(reason: str) -> str:
    """A short class of a failure reason, for counting ("HTTP 429", "timeout after 5s", ...)."""
    return reason.split(" (")[0].split(":")[0][:60]


class FailFast:
    """Stops a run whose first requests all fail alike, instead of retrying every item of a split.

    * The first ``window`` attempts (all of them, in a run of fewer requests) fail to connect:
      nothing listens at the URL, a wrong host. Stop at once, without waiting for retries.
    * The first ``window`` requests all fail for good for the same reason (every prompt refused
      with the same HTTP 400, a server error on every retry): stop then. A run of fewer requests
      is no longer than this rule would wait anyway: it runs to its end.

    One answer disarms it: after that, failures belong to their items (retried, then recorded).
    ``window`` 0 never stops a run.
    """

    def __init__(self, where: str, window: int, requests: int) -> None:
        self.where = where
        self.window = window
        self.connect_window = min(window, requests)
        self.armed = window > 0 and requests > 0
        self._connect_failures = 0  # while every attempt so far failed to connect
        self._reasons: list[str] = []  # classes of the requests failed for good so far

    def connected(self) -> None:
        """An attempt reached the server (whatever it answered): the connection rule is off."""
        self._connect_failures = -1

    def connect_failed(self, reason: str) -> None:
        """An attempt could not connect. Raises TeacherUnreachable when the first ``window``
        attempts all could not."""
        if not self.armed or self._connect_failures < 0:
            return
        self._connect_failures += 1
        if self._connect_failures >= self.connect_window:
            raise TeacherUnreachable(
                f"{self.where}: the first {self.connect_window} request(s) all failed to connect ({reason}). "
                "Is the teacher server running there (teacher.backend.base_url)?")

    def finished(self, answer: Answer) -> None:
        """A request is finished for good. Raises TeacherUnreachable when the first ``window``
        requests all failed for the same reason."""
        if not self.armed:
            return
        if answer.ok:
            self.armed = False
            return
        self._reasons.append(reason_class(answer.error or ""))
        if len(set(self._reasons)) > 1:
            self.armed = False
        elif len(self._reasons) >= self.window:
            raise TeacherUnreachable(
                f"{self.where}: the first {self.window} request(s) all failed the same way ({answer.error}). "
                "Check the server, teacher.backend.model and the request settings (teacher.backend.fail_fast=0 "
                "asks every item anyway)")


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
