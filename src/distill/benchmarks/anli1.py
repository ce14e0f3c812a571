"""ANLI round 1: adversarial premise/hypothesis pairs with a human ``reason``.

Teacher completions read ``<rationale> So the answer is <label word>.`` and then usually run on
into a made-up next exemplar (``\\n\\nPremise: ...``).

Parsing follows the official release: cut at the first ``Premise:``, right-trim, and split on
``So the answer is``; exactly one occurrence is required (the lower-case ``so the answer is``
of a few completions is a parse failure there too). The label is the remainder left-trimmed with
its last character (the full stop) removed; an empty label is a parse failure.
"""

from __future__ import annotations

from typing import ClassVar

from distill.benchmarks.base import Exemplar, ParsedCompletion
from distill.benchmarks.nli import NLIBenchmark

__all__ = ["ANLI1"]

ANSWER_MARKER = "So the answer is"


class ANLI1(NLIBenchmark):
    name: ClassVar[str] = "anli1"
    exemplars: ClassVar[tuple[Exemplar, ...]] = ()

    def parse_completion(self, text: str) -> ParsedCompletion:
        head = text.split("Premise:")[0].rstrip()
        parts = head.split(ANSWER_MARKER)
        if len(parts) != 2:
            return ParsedCompletion(
                head.rstrip() if len(parts) == 1 else None,
                None,
                f"expected one {ANSWER_MARKER!r} before 'Premise:', found {len(parts) - 1}",
            )
        rationale = parts[0].rstrip()
        label = parts[1].lstrip()[:-1]
        if not label:
            return ParsedCompletion(rationale, None, f"no label after {ANSWER_MARKER!r}")
        return ParsedCompletion(rationale, label)

    def format_answer(self, rationale: str, label: str) -> str:
        return f"{rationale} {ANSWER_MARKER} {label}."
