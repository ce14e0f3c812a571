"""What every benchmark is: how its records become student examples, how a teacher's completion is parsed,
how a prediction is scored and how the teacher is prompted. One module per benchmark subclasses :class:`Benchmark`
and keeps everything specific to it in one place (reading, input format, label space, parsing, scoring, prompt)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar


class DataError(ValueError):
    """Bad input data. The message always names the file (and line, where there is one)."""


@dataclass(frozen=True)
class ParsedCompletion:
    """A teacher completion split into rationale and label; ``error`` (None on success) says why parsing
    failed, and ``rationale``/``label`` then hold whatever could be recovered (possibly None)."""

    rationale: str | None
    label: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def cut_at_answer(text: str, marker: str, next_exemplar: str) -> tuple[str, str] | ParsedCompletion:
    """The official rule CQA, SVAMP and ANLI share: drop the made-up next exemplar (everything from
    ``next_exemplar`` on), then split once at the answer ``marker``. Returns ``(rationale, rest)``,
    or the failed :class:`ParsedCompletion` when the marker is not there exactly once."""
    head = text.split(next_exemplar)[0].rstrip()
    parts = head.split(marker)
    if len(parts) != 2:
        return ParsedCompletion(head if len(parts) == 1 else None, None,
                                f"expected one {marker!r} before {next_exemplar!r}, found {len(parts) - 1}")
    return parts[0].rstrip(), parts[1]


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


def read_exemplars(path: str | Path) -> tuple[Exemplar, ...]:
    """Few-shot exemplars from a prompt file: a YAML or JSON list of ``{input, rationale, label}``
    (JSON is YAML, so one reader serves both). Raises :class:`DataError` naming the file and item."""
    import yaml  # PyYAML ships with Hydra/OmegaConf

    path = Path(path)
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read prompt file: {e}") from e
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: a prompt file is a non-empty list of {{input, rationale, label}} items")
    fields = ("input", "rationale", "label")
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in fields):
            raise DataError(f"{path}: item {i}: needs string fields input, rationale, label; got {item!r}")
        if extra := set(item) - set(fields):
            raise DataError(f"{path}: item {i}: unknown fields {sorted(extra)}")
    return tuple(Exemplar(item["input"], item["rationale"], item["label"]) for item in items)


@lru_cache(maxsize=1 << 16)
def as_written(tokenizer: Any, text: str) -> str:
    """``text`` as a student with ``tokenizer`` can write it: encoded without special tokens and
    decoded the way generation decodes predictions (:func:`distill.models.inference.generate_from_ids`:
    special tokens skipped, stripped). An uncased WordPiece student writes ``friend's house`` as
    ``friend ' s house``."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


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

    def configured_fields(self) -> dict[str, str]:
        """Optional record fields this benchmark was configured to read, by setting name
        (``{"rationale_field": "why"}``). A field that no train record has is a typo: the data
        layer refuses it, naming the fields the records do have."""
        return {}

    def generate(self, split: str) -> list[Example] | None:
        """A split's examples, rationale and teacher label attached, for a benchmark made in code; None: read files."""
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

    def score_as_written(self, prediction: str, gold: str, tokenizer: Any) -> bool:
        """How a student's generated label is scored: :meth:`score` against ``gold`` or against
        ``gold`` as the student's ``tokenizer`` can write it (:func:`as_written`), so a gold the
        tokenizer cannot reproduce is not always wrong. A gold that writes as nothing is only
        scored as itself. Teacher labels are scored with :meth:`score`."""
        if self.score(prediction, gold):
            return True
        written = as_written(tokenizer, gold)
        return bool(written) and self.score(prediction, written)

    def in_label_space(self, label: str) -> bool:
        return self.label_space is None or self.normalize(label) in self.label_space

    # ----------------------------------------------------------------- hooks (added by the data layer)
    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Called by the data module before it builds examples, for a student input that depends on the
        tokenizer (NLI joins premise and hypothesis with its eos token, as the official code does)."""

    def label_fits(self, label: str, example: Example) -> bool:
        """Whether ``label`` is an allowed answer for ``example``: the label space, or the item's
        own choices where each item has its own (CQA overrides this)."""
        return self.in_label_space(label)

    def format_exemplar(self, exemplar: Exemplar) -> str:
        """The answer part of one few-shot demonstration (CQA's needs the input: it names the choice's letter)."""
        return self.format_answer(exemplar.rationale, exemplar.label)

    # ----------------------------------------------------------------- teacher prompt
    # A few-shot chain-of-thought prompt: each exemplar is shown as ``query_template`` filled with
    # its input, then the answer (:meth:`format_exemplar`); the final query is the example's
    # ``prompt_input``. Completion prompts put ``answer_cue`` + " " between query and answer and end
    # on the cue; chat prompts put queries in user turns and answers in assistant turns.
    #: how one query is framed for the teacher (``{input}``: an exemplar's input / ``prompt_input``)
    query_template: ClassVar[str] = "Q: {input}"
    #: what follows a query and starts the answer in a plain-completion prompt
    answer_cue: ClassVar[str] = "\nA:"
    #: between demonstrations (and before the final query) in a plain-completion prompt
    demo_separator: ClassVar[str] = "\n\n"
    #: where the teacher starts writing the next, made-up exemplar: its completion is cut there
    stop_sequences: ClassVar[tuple[str, ...]] = ("\n\nQ:",)
    #: system message of a chat prompt
    instruction: ClassVar[str] = (
        "Answer the last question the way the examples do: reason step by step, "
        "then state the answer in exactly the same format."
    )

    def prompt_input(self, example: Example) -> str:
        """The query as the teacher sees it, in the same form as :attr:`Exemplar.input` (the student's input)."""
        return example.input

    def build_prompt(self, example: Example, chat: bool = False) -> str | list[dict[str, str]]:
        """The teacher prompt for ``example``: a completion string, or chat messages when ``chat``."""
        if not self.exemplars:
            raise ValueError(f"benchmark {self.name!r} has no few-shot exemplars to prompt a teacher with")
        demos = [(self.query_template.format(input=e.input), self.format_exemplar(e)) for e in self.exemplars]
        query = self.query_template.format(input=self.prompt_input(example))
        if chat:
            messages = [{"role": "system", "content": self.instruction}]
            for q, a in demos:
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            messages.append({"role": "user", "content": query})
            return messages
        parts = [f"{q}{self.answer_cue} {a}" for q, a in demos]
        parts.append(f"{query}{self.answer_cue}")
        return self.demo_separator.join(parts)
