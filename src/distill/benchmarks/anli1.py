"""ANLI round 1: adversarial premise/hypothesis pairs with a human ``reason``. Teacher completions read
``<rationale> So the answer is <label word>.``; parsing follows the official release: cut at the first
``Premise:``, right-trim, split on ``So the answer is`` (exactly once, case-sensitive); the label is the
remainder left-trimmed without its last character (the full stop); an empty label is a parse failure."""

from __future__ import annotations

from typing import ClassVar

from distill.benchmarks.base import Exemplar, ParsedCompletion, cut_at_answer
from distill.benchmarks.nli import NLIBenchmark, nli_exemplar

__all__ = ["ANLI1"]

ANSWER_MARKER = "So the answer is"
#: the premises two exemplars share
HARBOR_LIGHTS = ("Harbor Lights is a 1987 American drama film directed by Ellen Marsh and starring Paul Denton and "
                 "Ruth Calder. It follows a fisherman who returns to his hometown in Maine after twenty years away.")
OAKRIDGE = ("The Oakridge Public Library is the main library of the city of Oakridge. It was founded in 1902 with a "
            "gift from a local timber merchant and moved into its present building on Main Street in 1964.")


class ANLI1(NLIBenchmark):
    name: ClassVar[str] = "anli1"
    #: teacher prompt: "Premise: ...\nHypothesis: ...\nAnswer: <rationale> So the answer is <label>."
    answer_cue: ClassVar[str] = "\nAnswer:"
    #: few-shot chain of thought for a teacher: encyclopedia-style premises about made-up subjects
    #: in the style of ANLI, two per label, rationales written for this project
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        nli_exemplar(HARBOR_LIGHTS, "Harbor Lights was released in the 1980s.",
                     "The premise says that Harbor Lights is a 1987 film. 1987 is in the 1980s.", "entailment"),
        nli_exemplar(HARBOR_LIGHTS, "Harbor Lights made a lot of money at the box office.",
                     "The premise gives the film's year, director, cast and story, but it says nothing about how much "
                     "money the film made.", "neutral"),
        nli_exemplar("Karl Brenner (born 4 March 1951) is a retired German footballer who played as a defender. He "
                     "spent his whole professional career at VfB Lindenau, making 312 league appearances between 1970 "
                     "and 1985.", "Karl Brenner played for several professional clubs.",
                     "The premise says that Karl Brenner spent his whole professional career at one club, VfB "
                     "Lindenau. So he did not play for several professional clubs.", "contradiction"),
        nli_exemplar(OAKRIDGE, "The Oakridge Public Library was founded before 1910.",
                     "The premise says that the library was founded in 1902. 1902 is before 1910.", "entailment"),
        nli_exemplar(OAKRIDGE, "The library has always been in the same building on Main Street.",
                     "The premise says that the library moved into its present building in 1964, 62 years after it "
                     "was founded. So it has not always been in the same building.", "contradiction"),
        nli_exemplar("Silverton is a small town in the county of Hale with a population of 2,430 at the 2011 census. "
                     "It lies on the river Wend and has a railway station on the line between Greyford and Ashby.",
                     "Most people who live in Silverton work in Greyford.",
                     "The premise gives the town's population, its river and its railway line, but it says nothing "
                     "about where the people of Silverton work.", "neutral"),
    )

    def parse_completion(self, text: str) -> ParsedCompletion:
        cut = cut_at_answer(text, ANSWER_MARKER, "Premise:")
        if isinstance(cut, ParsedCompletion):
            return cut
        rationale, tail = cut
        label = tail.lstrip()[:-1]
        if not label:
            return ParsedCompletion(rationale, None, f"no label after {ANSWER_MARKER!r}")
        return ParsedCompletion(rationale, label)

    def format_answer(self, rationale: str, label: str) -> str:
        return f"{rationale} {ANSWER_MARKER} {label}."
