"""The account a teacher run ends with: what was asked, answered, failed and how good it was."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def format_rows(rows: list[int], shown: int = 20) -> str:
    """``1, 5, 9`` (the first ``shown`` rows, then how many in all)."""
    return ", ".join(map(str, rows[:shown])) + (f", ... ({len(rows)} in all)" if len(rows) > shown else "")


@dataclass
class Report:
    benchmark: str
    split: str
    teacher: str
    backend: str
    rows: tuple[int, int]  # [start, stop) of the split this account covers
    items: int = 0
    samples_per_item: int = 1
    requests: int = 0  # distinct prompts x samples
    from_cache: int = 0  # requests already answered (or recorded failed) before this run
    asked: int = 0  # requests sent to the teacher in this run
    attempts: int = 0  # HTTP requests / generations in this run, retries included
    retries: int = 0
    answered: int = 0  # items with a completion
    failed: int = 0  # items without one (every sample failed for good): written as ""
    placeholder_rows: list[int] = field(default_factory=list)  # rows of the failed items (their "" keeps alignment)
    parse_failures: int = 0  # items whose completion does not parse
    out_of_label_space: int = 0  # items whose parsed label is not an allowed answer
    with_gold: int = 0
    teacher_correct: int = 0
    filtered: int = 0  # items whose rationale was dropped by filter_gold
    # teacher.samples > 1: accuracy of sample s alone (over items with gold), the mean share of an
    # item's samples that vote with its majority, and the items whose samples all agree
    sample_accuracy: list[float] = field(default_factory=list)
    agreement: float | None = None
    unanimous: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    generate_s: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    retry_reasons: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def teacher_accuracy(self) -> float | None:
        """Teacher label correct / items with gold (failed or unparsed items count as wrong)."""
        return self.teacher_correct / self.with_gold if self.with_gold else None

    @property
    def requests_per_s(self) -> float | None:
        return self.asked / self.generate_s if self.generate_s > 0 and self.asked else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "teacher_accuracy": self.teacher_accuracy,
                "vote_accuracy": self.teacher_accuracy if self.samples_per_item > 1 else None,
                "requests_per_s": self.requests_per_s}

    def format(self) -> str:
        """The account as the log shows it: a title, then one ``label  value`` line each."""
        acc = "n/a (no gold)" if self.teacher_accuracy is None else (
            f"{self.teacher_accuracy:.2%} ({self.teacher_correct}/{self.with_gold}; failed and unparsed count wrong)")
        rps = "n/a" if self.requests_per_s is None else f"{self.requests_per_s:.2f}"
        rows = [("items", f"{self.items} x {self.samples_per_item} sample(s) = {self.requests} requests"),
                ("from cache", self.from_cache),
                ("asked this run", f"{self.asked} ({self.attempts} attempts, {self.retries} retries)"),
                ("answered", self.answered),
                ("failed", f"{self.failed}  {self.failure_reasons}" if self.failure_reasons else self.failed),
                ("parse failures", self.parse_failures), ("out of label space", self.out_of_label_space),
                ("teacher accuracy", acc),
                ("tokens", f"prompt {self.prompt_tokens}, completion {self.completion_tokens}"),
                ("wall time", f"{self.wall_s:.1f}s (teacher {self.generate_s:.1f}s), requests/s {rps}")]
        if self.samples_per_item > 1 and self.sample_accuracy:
            mean = sum(self.sample_accuracy) / len(self.sample_accuracy)
            rows += [("sample accuracy", ", ".join(f"#{s} {a:.2%}" for s, a in enumerate(self.sample_accuracy))
                      + f"  (mean {mean:.2%})"),
                     ("vote accuracy", f"{self.teacher_accuracy:.2%}  (majority label; ties: earliest sample)")]
        if self.samples_per_item > 1 and self.agreement is not None:
            rows.append(("agreement", f"{self.agreement:.2%} of an item's samples vote with its majority; "
                                      f"{self.unanimous}/{self.items} items unanimous"))
        if self.placeholder_rows:
            rows.append(("placeholder rows", f"{format_rows(self.placeholder_rows)}  "
                                             "(failed: empty completions keep the files aligned)"))
        if self.filtered:
            rows.append(("filtered", f"{self.filtered} rationales dropped (teacher label != gold)"))
        if self.retry_reasons:
            rows.append(("retry reasons", self.retry_reasons))
        rows += [("wrote", f) for f in self.files]
        title = (f"teacher run: {self.benchmark}/{self.split} rows [{self.rows[0]}, {self.rows[1]}) "
                 f"with {self.teacher} ({self.backend})")
        return "\n".join([title] + [f"  {label:<20}{value}" for label, value in rows])
