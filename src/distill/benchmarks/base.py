"""What every benchmark is: how its records become student examples, how a teacher's
completion is parsed, how a prediction is scored, and how the teacher is prompted.

One module per benchmark subclasses :class:`Benchmark` and keeps everything specific to
that benchmark in one place (reading, input format, label space, parsing, scoring, prompt).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


class DataError(ValueError):
    """Bad input data. The message always names the file (and line, where there is one)."""


@dataclass(frozen=True)
class ParsedCompletion:
    """A teacher completion split into rationale and label.

    ``error`` is None when parsing succeeded; otherwise it says why it failed and
    ``rationale``/``label`` hold whatever could be recovered (possibly None).
    """

    rationale: str | None
    label: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Example:
    """One benchmark item as the student sees it (before task prefixes and tokenization)."""

    uid: str
    input: str  # the student's input text, without any task prefix
    gold: str | None  # gold label text; None where the data is unlabeled
    teacher_label: str | None = None  # the teacher's parsed label, where a teacher is attached
    rationale: str | None = None  # the teacher's parsed rationale
    teacher_error: str | None = None  # why the teacher completion could not be parsed
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the raw record


@dataclass(frozen=True)
class Exemplar:
    """One few-shot demonstration for the teacher prompt: an input, a rationale, a label."""

    input: str
    rationale: str
    label: str


class Benchmark(ABC):
    """A task: its records, its label space, its teacher-output format and its scorer."""

    name: ClassVar[str]
    #: closed label space, or None for free-text labels (e.g. SVAMP equations)
    label_space: ClassVar[tuple[str, ...] | None] = None
    #: few-shot chain-of-thought demonstrations for prompting a teacher
    exemplars: ClassVar[Sequence[Exemplar]] = ()

    # ----------------------------------------------------------------- records
    @abstractmethod
    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        """Turn one raw record into an :class:`Example`. Raise ``KeyError``/``ValueError``
        on a malformed record; the reader re-raises it as :class:`DataError` with file and line."""

    def generate(self, split: str) -> list[Example] | None:
        """Benchmarks made in code (no files) return a split's examples here, rationale and
        teacher label already attached; benchmarks read from files return None."""
        return None

    # ----------------------------------------------------------------- teacher output
    @abstractmethod
    def parse_completion(self, text: str) -> ParsedCompletion:
        """Split a raw teacher completion into rationale and label (never raises)."""

    @abstractmethod
    def format_answer(self, rationale: str, label: str) -> str:
        """Write an answer the way the teacher is asked to (and :meth:`parse_completion` reads)."""

    # ----------------------------------------------------------------- scoring
    def normalize(self, label: str) -> str:
        return label.strip()

    def score(self, prediction: str, gold: str) -> bool:
        """True when ``prediction`` counts as correct for ``gold``. Never executes model output."""
        return self.normalize(prediction) == self.normalize(gold)

    def in_label_space(self, label: str) -> bool:
        return self.label_space is None or self.normalize(label) in self.label_space
