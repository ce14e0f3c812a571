"""``arith``: one-step arithmetic word problems made in code, the offline default benchmark. The generator
writes each problem, its step-by-step rationale and its equation label (one of four operations, several
phrasings), standing in for SVAMP and a teacher at once; labels and scoring are SVAMP's. Splits are
disjoint by problem text and reproducible from ``seed``."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from distill.benchmarks.base import Example
from distill.benchmarks.svamp import SVAMP

NAMES = ("Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jamal", "Kira", "Leo",
         "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki")
OBJECTS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "shells",
           "cards", "coins", "balloons", "candies", "flowers", "toys", "eggs", "beads")
CONTAINERS = ("boxes", "bags", "packs", "jars", "baskets", "crates")


@dataclass(frozen=True)
class Template:
    op: str
    question: str
    rationale: str


TEMPLATES = (
    Template("+", "{n} has {a} {o}. {n} buys {b} more {o}. How many {o} does {n} have now?",
             "{n} starts with {a} {o} and buys {b} more, so {n} has {a} + {b} = {r} {o}."),
    Template("+", "There are {a} {o} in a basket and {b} {o} on the table. How many {o} are there in all?",
             "There are {a} {o} in the basket and {b} on the table. Together that is {a} + {b} = {r} {o}."),
    Template("+", "{n} found {a} {o} on Monday and {b} {o} on Tuesday. How many {o} did {n} find altogether?",
             "{n} found {a} {o} and then {b} more. Altogether {a} + {b} = {r} {o}."),
    Template("-", "{n} has {a} {o}. {n} gives {b} {o} to a friend. How many {o} does {n} have left?",
             "{n} starts with {a} {o} and gives away {b}, so {n} has {a} - {b} = {r} {o} left."),
    Template("-", "A shop had {a} {o}. It sold {b} of them. How many {o} does the shop have left?",
             "The shop had {a} {o} and sold {b}. That leaves {a} - {b} = {r} {o}."),
    Template("-", "{n} has {a} {o} and eats or loses {b} of them. How many {o} remain?",
             "Out of {a} {o}, {b} are gone, so {a} - {b} = {r} {o} remain."),
    Template("*", "{n} buys {a} {c} of {o}. Each of the {c} holds {b} {o}. How many {o} does {n} buy?",
             "There are {a} {c} with {b} {o} in each, so {n} buys {a} * {b} = {r} {o}."),
    Template("*", "Each of {a} children has {b} {o}. How many {o} do the children have in total?",
             "{a} children have {b} {o} each, so in total they have {a} * {b} = {r} {o}."),
    Template("*", "{n} collects {b} {o} every day for {a} days. How many {o} does {n} collect?",
             "{n} collects {b} {o} on each of {a} days, so {a} * {b} = {r} {o}."),
    Template("/", "{n} shares {a} {o} equally among {b} friends. How many {o} does each friend get?",
             "{a} {o} are split equally between {b} friends, so each gets {a} / {b} = {r} {o}."),
    Template("/", "{n} packs {a} {o} into {c} with {b} {o} in each. How many {c} does {n} fill?",
             "Each of the {c} takes {b} {o}, so {a} {o} fill {a} / {b} = {r} {c}."),
    Template("/", "{a} {o} are put into {b} equal groups. How many {o} are in each group?",
             "Putting {a} {o} into {b} equal groups gives {a} / {b} = {r} {o} per group."),
)

OPERANDS: dict[str, Callable[[random.Random], tuple[int, int, int]]] = {
    "+": lambda rng: (lambda a, b: (a, b, a + b))(rng.randint(2, 99), rng.randint(2, 99)),
    "-": lambda rng: (lambda b, r: (b + r, b, r))(rng.randint(2, 60), rng.randint(1, 60)),
    "*": lambda rng: (lambda a, b: (a, b, a * b))(rng.randint(2, 12), rng.randint(2, 15)),
    "/": lambda rng: (lambda b, r: (b * r, b, r))(rng.randint(2, 12), rng.randint(2, 15)),
}


class Arith(SVAMP):
    """Arithmetic word problems generated in code, with rationales (the offline default)."""

    name = "arith"

    def __init__(self, seed: int = 0, train_size: int = 2000, val_size: int = 200, test_size: int = 300,
                 name: str = "arith") -> None:
        super().__init__()
        if name != self.name:
            raise ValueError(f"Arith is the benchmark 'arith', not {name!r}")
        self.seed = seed
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    def _problem(self, rng: random.Random) -> tuple[str, str, str]:
        template = rng.choice(TEMPLATES)
        a, b, result = OPERANDS[template.op](rng)
        fields = {"n": rng.choice(NAMES), "o": rng.choice(OBJECTS), "c": rng.choice(CONTAINERS),
                  "a": a, "b": b, "r": result}
        return (template.question.format(**fields), template.rationale.format(**fields),
                f"({a} {template.op} {b})")

    def generate(self, split: str) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"arith has splits {sorted(self.sizes)}, not {split!r}")
        # earlier splits claim their problems first so that no text appears in two splits
        taken: set[str] = set()
        for earlier in ("train", "val", "test"):
            rng = random.Random(f"arith-{self.seed}-{earlier}")
            examples: list[Example] = []
            while len(examples) < self.sizes[earlier]:
                question, rationale, label = self._problem(rng)
                if question in taken:
                    continue
                taken.add(question)
                examples.append(Example(uid=f"arith-{earlier}-{len(examples)}", input=question, gold=label,
                                        teacher_label=label, rationale=rationale))
            if earlier == split:
                return examples
        raise AssertionError("unreachable")
