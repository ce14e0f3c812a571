"""CommonsenseQA (CoS-E v1.11): ``question``, five ``choices``, ``answer`` (the choice text, the label). The
student input, as in the official code, is the question, ``Answer Choices:`` and ``(a) ...`` to ``(e) ...``
on a line each. Parsing follows the official release: cut at the first ``Q:``, right-trim, split on
``So the answer is`` (exactly once); the label is the text after the first lettered marker ``(x)``,
trimmed, one trailing full stop removed. No lettered marker, or an empty label, is a parse failure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from distill.benchmarks.base import Benchmark, Example, Exemplar, ParsedCompletion, cut_at_answer

__all__ = ["CQA", "format_cqa_input"]

ANSWER_MARKER = "So the answer is"
LETTERS = "abcde"
_CHOICE_MARKER = re.compile(r"\(.\)")


def format_cqa_input(question: str, choices: Sequence[str]) -> str:
    """The official student input: the question, then ``Answer Choices:`` with lettered choices."""
    lettered = (f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices))
    return "\n".join([question, "Answer Choices:", *lettered])


class CQA(Benchmark):
    name: ClassVar[str] = "cqa"
    label_space: ClassVar[tuple[str, ...] | None] = None  # the label is one of each item's choices
    #: few-shot chain of thought for a teacher: questions and choices written in the style of the
    #: train split (inputs in the student's format), rationales written for this project
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        Exemplar(format_cqa_input("Where would you put a plate after washing and drying it?",
                                  ["dishwasher", "cupboard", "table", "restaurant", "floor"]),
                 "The answer must be a place where clean plates are stored. Of the above choices, only a cupboard is "
                 "where plates are kept once they are washed and dried.", "cupboard"),
        Exemplar(format_cqa_input("What do people usually feel when they win a prize?",
                                  ["sadness", "anger", "happiness", "boredom", "fatigue"]),
                 "The answer must be a feeling that winning brings. Winning a prize is good news, and good news makes "
                 "people happy.", "happiness"),
        Exemplar(format_cqa_input("The man needed his wool suit cleaned before the wedding, where did he take it?",
                                  ["closet", "dry cleaners", "department store", "wedding", "laundromat"]),
                 "The answer must be a place that cleans clothes. Wool suits are not washed in water, so they are "
                 "taken to the dry cleaners.", "dry cleaners"),
        Exemplar(format_cqa_input("If you wanted to see objects from ancient Egypt, where could you go?",
                                  ["museum", "zoo", "airport", "supermarket", "stadium"]),
                 "The answer must be a place that displays old objects. Of the above choices, only a museum shows "
                 "objects from ancient history.", "museum"),
        Exemplar(format_cqa_input("What is a person likely to do after running a long race?",
                                  ["fly", "sing", "build", "swim", "rest"]),
                 "The answer must be something a tired person does. Running a long race is tiring, so afterwards "
                 "people rest.", "rest"),
        Exemplar(format_cqa_input("Where can you borrow many books for free?",
                                  ["bookstore", "classroom", "desk", "library", "newspaper"]),
                 "The answer must be a place that lends books. A bookstore sells books, while a library lends them "
                 "for free.", "library"),
        Exemplar(format_cqa_input("The boy was afraid of the dark, so what did his parents leave on at night?",
                                  ["television", "oven", "night light", "radio", "fan"]),
                 "The answer must be something that gives light while a child sleeps. Of the above choices, only a "
                 "night light is meant to stay on in the dark.", "night light"),
    )

    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        question, choices, answer = record["question"], record["choices"], record["answer"]
        if not isinstance(choices, list) or len(choices) != len(LETTERS):
            raise ValueError(f"'choices' must be a list of {len(LETTERS)} strings, got {choices!r}")
        if not all(isinstance(c, str) for c in choices) or not isinstance(question, str):
            raise ValueError("'question' and every choice must be strings")
        if answer not in choices:
            raise ValueError(f"label (answer) {answer!r} is not one of the item's choices {choices}")
        return Example(uid=uid, input=format_cqa_input(question, choices), gold=answer, record=record)

    def label_fits(self, label: str, example: Example) -> bool:
        """A CQA answer must be one of the item's five choices."""
        return self.normalize(label) in example.record.get("choices", ())

    def parse_completion(self, text: str) -> ParsedCompletion:
        cut = cut_at_answer(text, ANSWER_MARKER, "Q:")
        if isinstance(cut, ParsedCompletion):
            return cut
        rationale, tail = cut
        pieces = _CHOICE_MARKER.split(tail)
        if len(pieces) < 2:
            return ParsedCompletion(rationale, None, f"no lettered choice '(x)' after {ANSWER_MARKER!r}")
        label = pieces[1].strip().removesuffix(".")
        if not label:
            return ParsedCompletion(rationale, None, "empty choice text after the lettered marker")
        return ParsedCompletion(rationale, label)

    def format_answer(self, rationale: str, label: str, *, letter: str | None = None,
                      choices: Sequence[str] | None = None) -> str:
        """``<rationale> So the answer is (<letter>) <label>.``; the letter is given, or found
        from ``choices`` (the answer names the choice's letter, which the label alone lacks)."""
        if letter is None:
            if choices is None or label not in choices:
                raise ValueError("a CQA answer names the choice's letter: pass letter= or choices= holding the label")
            letter = LETTERS[list(choices).index(label)]
        return f"{rationale} {ANSWER_MARKER} ({letter}) {label}."

    def format_exemplar(self, exemplar: Exemplar) -> str:
        """Finds the label's letter among the ``(x) choice`` lines of the exemplar's input."""
        for line in exemplar.input.splitlines():
            match = re.fullmatch(r"\(([a-z])\) (.*)", line.strip())
            if match and match.group(2) == exemplar.label:
                return self.format_answer(exemplar.rationale, exemplar.label, letter=match.group(1))
        raise ValueError(f"exemplar label {exemplar.label!r} is not among the lettered choices of its input")
