"""Natural language inference benchmarks (e-SNLI, ANLI): what they share.

Records hold ``premise``, ``hypothesis`` and an integer ``label`` (0 entailment, 1 neutral,
2 contradiction); the student's label is the word. As in the official code, the student input
is premise and hypothesis joined by the tokenizer's eos token (``</s>`` for T5, ``[SEP]`` for the
BERT-style MiniLM), so the data module binds its tokenizer before examples are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from distill.benchmarks.base import Benchmark, Example, Exemplar

__all__ = ["NLIBenchmark", "NLI_LABELS", "nli_exemplar"]

#: label words by the integer label of the release (0, 1, 2)
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")

#: joins premise and hypothesis before a tokenizer is bound (teacher prompting, plain listings)
UNBOUND_SEPARATOR = "\n"
#: a pair as the teacher sees it, whatever the student's separator
QUERY = "Premise: {premise}\nHypothesis: {hypothesis}"


def nli_exemplar(premise: str, hypothesis: str, rationale: str, label: str) -> Exemplar:
    """A few-shot demonstration whose input is the pair as the teacher sees it (:data:`QUERY`)."""
    return Exemplar(QUERY.format(premise=premise, hypothesis=hypothesis), rationale, label)


class NLIBenchmark(Benchmark):
    """Premise/hypothesis pairs labelled entailment, neutral or contradiction."""

    label_space: ClassVar[tuple[str, ...]] = NLI_LABELS
    query_template: ClassVar[str] = "{input}"
    stop_sequences: ClassVar[tuple[str, ...]] = ("\n\nPremise:",)

    def prompt_input(self, example: Example) -> str:
        return QUERY.format(premise=example.record["premise"], hypothesis=example.record["hypothesis"])

    def __init__(self, separator: str | None = None) -> None:
        """``separator`` joins premise and hypothesis in the student input. None (default)
        means the bound tokenizer's eos token, as in the official code."""
        self._separator = separator
        self._eos: str | None = None

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self._eos = getattr(tokenizer, "eos_token", None)

    @property
    def separator(self) -> str:
        return self._separator if self._separator is not None else self._eos or UNBOUND_SEPARATOR

    def gold_label(self, value: Any) -> str:
        """The label word of a record's label: 0/1/2 (the release) or the word itself."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(NLI_LABELS):
            return NLI_LABELS[value]
        if isinstance(value, str) and value.strip() in NLI_LABELS:
            return value.strip()
        raise ValueError(f"label {value!r} is not one of 0, 1, 2 or {', '.join(NLI_LABELS)}")

    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        premise, hypothesis = record["premise"], record["hypothesis"]
        if not isinstance(premise, str) or not isinstance(hypothesis, str):
            raise ValueError("premise and hypothesis must be strings")
        return Example(uid=uid, input=f"{premise}{self.separator}{hypothesis}", gold=self.gold_label(record["label"]),
                       record=record)
