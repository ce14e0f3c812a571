"""Do a file's teacher completions belong to its rows? The fingerprint of shards that do not.

Completions that landed on the wrong rows (shards cut at the wrong places, a records file edited
after annotation, another split's shards) still parse, but the teacher's label of a row then agrees
with that row's gold label no more often than with the gold label of any other row. So, over the
rows whose completion parsed, compare

* ``own``: the share of teacher labels scoring right against their own row's gold, with
* ``others``: the share scoring right against the gold of other rows (paired by a few seeded
  shuffles of the rows): chance agreement, whatever the label space (3 NLI words, CQA's five
  choices per item, SVAMP's free-text equations, which agree with another row's almost never).

A file (and each shard of it) is judged only with at least :data:`MIN_ROWS` parsed rows, and only
when most of its completions parse (when most do not, the parse failures tell the story). It looks
misaligned when ``own`` is within ``max(MARGIN, 2 standard errors)`` of ``others``. On the release
``own`` is 0.66 (anli1) to 0.77 (cqa) against ``others`` of 0.34 (NLI) or near 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distill.benchmarks.base import Benchmark, Example

__all__ = ["MIN_ROWS", "MIN_PARSED_SHARE", "MARGIN", "Agreement", "agreement", "misaligned_parts"]

#: fewer parsed rows than this: too few to judge
MIN_ROWS = 50
#: judge only where at least this share of the completions parse
MIN_PARSED_SHARE = 0.5
#: the least gap between own and chance agreement that a teacher of any use shows
MARGIN = 0.05
#: seeded shuffles that pair each teacher label with another row's gold
SHUFFLES = 3


@dataclass(frozen=True)
class Agreement:
    """How often a part's teacher labels score right against their own rows' gold and others'."""

    part: str  # a shard's file name, or the records file
    rows: int
    parsed: int  # rows with a parsed teacher label and a gold label
    own: float
    others: float

    @property
    def judged(self) -> bool:
        return self.parsed >= MIN_ROWS and self.parsed >= MIN_PARSED_SHARE * self.rows

    @property
    def near_chance(self) -> bool:
        spread = math.sqrt(self.others * (1.0 - self.others) / self.parsed) if self.parsed else 0.0
        return self.judged and self.own <= self.others + max(MARGIN, 2.0 * spread)

    def describe(self) -> str:
        return (
            f"{self.part}: the teacher's labels score right against their own rows' gold on {self.own:.3f} of "
            f"{self.parsed} parsed rows, and against other rows' gold on {self.others:.3f} (chance)"
        )


def agreement(benchmark: Benchmark, examples: Sequence[Example], part: str) -> Agreement:
    """Own-row and other-row agreement of the parsed teacher labels of ``examples``."""
    pairs = [(e.teacher_label, e.gold) for e in examples if e.teacher_label is not None and e.gold is not None]
    n = len(pairs)
    if n < 2:
        return Agreement(part, len(examples), n, 0.0, 0.0)
    own = sum(benchmark.score(label, gold) for label, gold in pairs) / n
    rng = np.random.default_rng(0)
    others = sum(
        benchmark.score(label, pairs[j][1])
        for _ in range(SHUFFLES)
        for (label, _), j in zip(pairs, rng.permutation(n).tolist())
    ) / (n * SHUFFLES)
    return Agreement(part, len(examples), n, own, others)


def misaligned_parts(
    benchmark: Benchmark, examples: Sequence[Example], shard_of: Sequence[str], whole: str
) -> list[Agreement]:
    """The parts (each shard, and the whole file when it has several) whose teacher labels agree
    with their own rows' gold at chance level. ``shard_of[i]`` names the shard of ``examples[i]``."""
    parts: dict[str, list[Example]] = {}
    for example, shard in zip(examples, shard_of):
        parts.setdefault(shard, []).append(example)
    checked = [agreement(benchmark, rows, shard) for shard, rows in parts.items()]
    if len(parts) > 1:
        checked.append(agreement(benchmark, examples, whole))
    return [a for a in checked if a.near_chance]
