r"""e-SNLI: SNLI premise/hypothesis pairs with human explanations (``explanation_1..3``). Teacher completions
read ``<rationale>\nAnswer: <label word>``, then usually a made-up next exemplar. Parsing follows the
official release: the rationale is everything before the first ``Answer:``, the label what follows the
first ``Answer: `` up to ``Premise``, right-trimmed; no ``Answer: `` (or nothing after it) is a parse
failure. A label that is not a label word (cut mid-word) is kept and counted outside the label space."""

from __future__ import annotations

from typing import ClassVar

from distill.benchmarks.base import Exemplar, ParsedCompletion
from distill.benchmarks.nli import NLIBenchmark, nli_exemplar

__all__ = ["ESNLI"]


class ESNLI(NLIBenchmark):
    name: ClassVar[str] = "esnli"
    #: teacher prompt: "Premise: ...\nHypothesis: ...\nExplanation: <rationale>\nAnswer: <label>"
    answer_cue: ClassVar[str] = "\nExplanation:"
    #: few-shot chain of thought for a teacher: pairs written in the style of SNLI (image
    #: captions and short hypotheses), two per label, rationales written for this project
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        nli_exemplar("A man in a blue jacket is riding a bicycle down a busy street.", "A man is riding a bike.",
                     "A bicycle is a bike, so a man riding a bicycle down the street is riding a bike.", "entailment"),
        nli_exemplar("Two young girls are playing in a sandbox at the park.", "The girls are building a sand castle.",
                     "Playing in a sandbox does not necessarily mean building a sand castle.", "neutral"),
        nli_exemplar("A woman is slicing vegetables in a small kitchen.", "The woman is asleep on the couch.",
                     "A woman cannot be slicing vegetables in a kitchen and be asleep on a couch at the same time.",
                     "contradiction"),
        nli_exemplar("A group of people stand in a long line outside a theater.", "People are waiting outdoors.",
                     "Standing in a line outside a theater is waiting outdoors.", "entailment"),
        nli_exemplar("A brown dog runs through a field with a stick in its mouth.",
                     "The dog is bringing the stick back to its owner.",
                     "A dog carrying a stick is not necessarily bringing it back to its owner.", "neutral"),
        nli_exemplar("An elderly man is reading a newspaper on a park bench.", "A young boy is reading a newspaper.",
                     "The person reading is an elderly man, and an elderly man is not a young boy.", "contradiction"),
    )

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
