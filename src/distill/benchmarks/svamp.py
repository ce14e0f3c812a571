"""SVAMP: arithmetic word problems whose label is an equation such as ``( 84.0 / 2.0 )``.

Records hold ``input`` (the problem text) and ``label`` (the equation); the student input is the
problem text as is. Teacher completions read ``<rationale> The answer is (<equation>).`` then
usually ``\\n\\nQ: ...``.

Parsing follows the official release: cut at the first ``Q:``, right-trim, split on
``The answer is`` (exactly one occurrence); the label is the first ``(`` to the last ``)`` on the
same line after it. Scoring compares numeric values through the safe evaluator of
:mod:`distill.benchmarks.arithmetic` (the official code uses ``eval``; this never executes text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from distill.benchmarks.arithmetic import evaluate, same_value
from distill.benchmarks.base import Benchmark, Example, Exemplar, ParsedCompletion

__all__ = ["SVAMP"]

ANSWER_MARKER = "The answer is"
_EQUATION = re.compile(r"\(.*\)")


class SVAMP(Benchmark):
    name: ClassVar[str] = "svamp"
    label_space: ClassVar[tuple[str, ...] | None] = None  # free text: any arithmetic expression
    exemplars: ClassVar[tuple[Exemplar, ...]] = ()

    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        text, label = record["input"], record["label"]
        if not isinstance(text, str):
            raise ValueError("'input' must be a string")
        if evaluate(label) is None:
            raise ValueError(f"label {label!r} is not an arithmetic expression (numbers, + - * /, parentheses)")
        return Example(uid=uid, input=text, gold=label, record=record)

    def parse_completion(self, text: str) -> ParsedCompletion:
        head = text.split("Q:")[0].rstrip()
        parts = head.split(ANSWER_MARKER)
        if len(parts) != 2:
            return ParsedCompletion(
                head if len(parts) == 1 else None,
                None,
                f"expected one {ANSWER_MARKER!r} before 'Q:', found {len(parts) - 1}",
            )
        rationale = parts[0].rstrip()
        match = _EQUATION.search(parts[1])
        if match is None:
            return ParsedCompletion(rationale, None, f"no parenthesised equation after {ANSWER_MARKER!r}")
        return ParsedCompletion(rationale, match.group(0))

    def format_answer(self, rationale: str, label: str) -> str:
        equation = label.strip()
        if not (equation.startswith("(") and equation.endswith(")")):
            equation = f"({equation})"
        return f"{rationale} {ANSWER_MARKER} {equation}."

    def score(self, prediction: str, gold: str) -> bool:
        """Equal numeric values (``( 84.0 / 2.0 )`` == ``(84 / 2)``); text that is not plain
        arithmetic is wrong. Nothing is executed."""
        return same_value(prediction, gold)

    def in_label_space(self, label: str) -> bool:
        """A label is in SVAMP's (free-text) space when it is an arithmetic expression."""
        return evaluate(label) is not None
