r"""SVAMP: arithmetic word problems (``input``) whose ``label`` is an equation such as ``( 84.0 / 2.0 )``.
Teacher completions read ``<rationale> The answer is (<equation>).`` Parsing follows the official
release: cut at the first ``Q:``, right-trim, split on ``The answer is`` (exactly once); the label is the
first ``(`` to the last ``)`` on that line (the official ``\(.*\)``, in one pass). Scoring compares values
through the safe evaluator of :mod:`distill.benchmarks.equation`: no text is ever executed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from distill.benchmarks.equation import evaluate, same_value
from distill.benchmarks.base import Benchmark, Example, Exemplar, ParsedCompletion, cut_at_answer

__all__ = ["SVAMP"]

ANSWER_MARKER = "The answer is"
_SPLIT_DECIMAL = re.compile(r"(\d)\s*\.\s+(\d)")


def first_parenthesised(text: str) -> str | None:
    r"""What ``re.search(r"\(.*\)", text)`` matches, in time linear in ``text``: on the first line
    holding a ``(`` with a ``)`` after it, from that ``(`` to the line's last ``)``."""
    for line in text.split("\n"):
        start = line.find("(")
        if start >= 0:
            end = line.rfind(")")
            if end > start:
                return line[start : end + 1]
    return None


class SVAMP(Benchmark):
    name: ClassVar[str] = "svamp"
    label_space: ClassVar[tuple[str, ...] | None] = None  # free text: any arithmetic expression
    #: few-shot chain of thought for a teacher; inputs written in the style of the train split
    #: (body, a newline, the question), rationales and equations written for this project
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        Exemplar("Maria baked 36 cookies for the school fair. If she put 4 cookies in each bag\n"
                 "How many bags did she fill?",
                 "Maria baked 36 cookies and put 4 cookies in each bag. So she filled 36 / 4 = 9 bags.", "(36 / 4)"),
        Exemplar("There were 58 children on a school bus. At the first stop 17 children got off the bus.\n"
                 "How many children are still on the bus?",
                 "There were 58 children on the bus and 17 of them got off. So 58 - 17 = 41 children are still on the "
                 "bus.", "(58 - 17)"),
        Exemplar("Tom keeps 12 marbles in each of his 5 jars. He also has 9 loose marbles in his pocket.\n"
                 "How many marbles does Tom have in all?",
                 "Tom has 5 jars with 12 marbles each, which is 5 * 12 = 60 marbles. Together with the 9 loose "
                 "marbles he has 60 + 9 = 69 marbles.", "((5 * 12) + 9)"),
        Exemplar("A farmer picked 45 apples in the morning and 28 apples in the afternoon. He sold 50 of them at the "
                 "market.\nHow many apples does he have left?",
                 "The farmer picked 45 + 28 = 73 apples. After selling 50 of them he has 73 - 50 = 23 apples left.",
                 "((45 + 28) - 50)"),
        Exemplar("Lisa read 24 pages of her book on saturday and some more pages on sunday. If she read 61 pages "
                 "over the weekend\nHow many pages did she read on sunday?",
                 "Lisa read 61 pages in all and 24 of them on saturday. So she read 61 - 24 = 37 pages on sunday.",
                 "(61 - 24)"),
        Exemplar("Jake had some toy cars. He bought 14 more toy cars at the store and now he has 50 toy cars.\n"
                 "How many toy cars did Jake have at first?",
                 "Jake has 50 toy cars after buying 14 more. So at first he had 50 - 14 = 36 toy cars.", "(50 - 14)"),
        Exemplar("Each box of crayons holds 8 crayons. A teacher bought 6 boxes for her class and 3 boxes for the "
                 "art room.\nHow many crayons did she buy?",
                 "The teacher bought 6 + 3 = 9 boxes and each box holds 8 crayons. So she bought 9 * 8 = 72 crayons.",
                 "((6 + 3) * 8)"),
        Exemplar("Ben saved 96 dollars. He spent 30 dollars on a video game and shared the rest equally among his 3 "
                 "sisters.\nHow many dollars did each sister get?",
                 "After spending 30 dollars Ben had 96 - 30 = 66 dollars left. Shared among 3 sisters, each got "
                 "66 / 3 = 22 dollars.", "((96 - 30) / 3)"),
    )

    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        text, label = record["input"], record["label"]
        if not isinstance(text, str):
            raise ValueError("'input' must be a string")
        if evaluate(label) is None:
            raise ValueError(f"label {label!r} is not an arithmetic expression (numbers, + - * /, parentheses)")
        return Example(uid=uid, input=text, gold=label, record=record)

    def parse_completion(self, text: str) -> ParsedCompletion:
        cut = cut_at_answer(text, ANSWER_MARKER, "Q:")
        if isinstance(cut, ParsedCompletion):
            return cut
        rationale, tail = cut
        equation = first_parenthesised(tail)
        if equation is None:
            return ParsedCompletion(rationale, None, f"no parenthesised equation after {ANSWER_MARKER!r}")
        return ParsedCompletion(rationale, equation)

    def format_answer(self, rationale: str, label: str) -> str:
        equation = label.strip()
        if not (equation.startswith("(") and equation.endswith(")")):
            equation = f"({equation})"
        return f"{rationale} {ANSWER_MARKER} {equation}."

    def normalize(self, label: str) -> str:
        """Trimmed, with decimals that a WordPiece decode split apart joined again
        (MiniLM decodes ``84.0`` as ``84. 0``)."""
        return _SPLIT_DECIMAL.sub(r"\1.\2", label.strip())

    def score(self, prediction: str, gold: str) -> bool:
        """Equal numeric values (``( 84.0 / 2.0 )`` == ``(84 / 2)``); text that is not plain
        arithmetic is wrong. Nothing is executed."""
        return (prediction is not None and gold is not None
                and same_value(self.normalize(prediction), self.normalize(gold)))

    def in_label_space(self, label: str) -> bool:
        """A label is in SVAMP's (free-text) space when it is an arithmetic expression."""
        return evaluate(self.normalize(label)) is not None
