"""Self-consistency: choose one of a row's ``teacher.samples`` completions by majority vote.

Only samples whose completion parses to a label that fits the item vote, in classes of labels the benchmark
scores as equal (SVAMP's ``(84 / 2)`` and ``( 84.0 / 2.0 )`` vote together). The class with most votes wins, a
tie going to the class whose first vote came first (lowest sample index); the row keeps the first sample of the
winning class, whose rationale agrees with the vote."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    chosen: int | None  # index of the chosen sample; None when no sample has a valid label
    label: str | None  # the winning label (as the chosen sample wrote it)
    counts: tuple[tuple[str, int], ...]  # (label, votes) per class, in order of first appearance


def majority_vote(labels: Sequence[str | None], same: Callable[[str, str], bool]) -> Vote:
    """Vote over ``labels`` (None: the sample does not vote); ``same(a, b)``: a and b agree."""
    classes: list[list[int]] = []  # sample indices per class, in order of first appearance
    for i, label in enumerate(labels):
        if label is None:
            continue
        for members in classes:
            if same(label, labels[members[0]]):
                members.append(i)
                break
        else:
            classes.append([i])
    if not classes:
        return Vote(None, None, ())
    best = max(classes, key=len)  # max keeps the first of equal maxima: ties go to the earliest class
    return Vote(best[0], labels[best[0]], tuple((labels[m[0]], len(m)) for m in classes))
