"""e-SNLI: SNLI premise/hypothesis pairs with human explanations (``explanation_1..3``).

Teacher completions (PaLM, few-shot chain of thought) read
``<rationale>\\nAnswer: <label word>`` and then usually run on into a made-up next exemplar
(``\\n\\nPremise: ...``), which is cut off.

Parsing follows the official release: the rationale is everything before the first
``Answer:``; the label is what follows the first ``Answer: `` up to ``Premise``, right-trimmed.
No ``Answer: `` (or nothing after it) is a parse failure. A label that parses but is not a label
word (a completion cut mid-word, e.g. ``entailment\\n\\nPre``) is kept and counted as a
label-space violation, as the official figures count it as wrong, not as unparsed.
"""

from __future__ import annotations

from typing import ClassVar

from distill.benchmarks.base import Exemplar, ParsedCompletion
from distill.benchmarks.nli import NLIBenchmark

__all__ = ["ESNLI"]


class ESNLI(NLIBenchmark):
    name: ClassVar[str] = "esnli"
    exemplars: ClassVar[tuple[Exemplar, ...]] = ()

    def parse_completion(self, text: str) -> ParsedCompletion:
        rationale = text.split("Answer:")[0].rstrip()
        pieces = text.split("Answer: ")
        if len(pieces) < 2:
            return ParsedCompletion(rationale, None, "no 'Answer: ' in the completion")
        label = pieces[1].split("Premise")[0].rstrip()
        if not label:
            return ParsedCompletion(rationale, None, "nothing after 'Answer: '")
        return ParsedCompletion(rationale, label)

    def format_answer(self, rationale: str, label: str) -> str:
        return f"{rationale}\nAnswer: {label}"
