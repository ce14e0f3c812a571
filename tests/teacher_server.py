"""Helpers for the teacher tests: a small SVAMP-style data set written into tmp, the example a prompt
asks about, a teacher that answers every prompt with its gold label (or a chosen wrong one), and a
fault plan by row (the server is :mod:`loopback_server`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from distill.benchmarks import get_benchmark
from distill.benchmarks.base import Benchmark, Example, Exemplar
from distill.data.files import load_file
from distill.teacher.annotator import Settings
from distill.teacher.backend import Prompt
from loopback_server import prompt_key

REPO = Path(__file__).resolve().parents[1]


def write_svamp_like(data_dir: Path, n: int = 24, split: str = "test") -> list[Example]:
    """``{data_dir}/svamp/svamp_{split}.json`` with n made-up addition problems; their examples."""
    path = data_dir / "svamp" / f"svamp_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i in range(n):
            a, b = 3 + i, 10 + 2 * i
            rec = {"input": f"Ann has {a} apples and buys {b} more.\nHow many apples does Ann have now?",
                   "label": f"( {a}.0 + {b}.0 )"}
            fh.write(json.dumps(rec) + "\n")
    return load_file(get_benchmark("svamp"), data_dir, split, teacher=None)[0]


class PromptIndex:
    """Which example a prompt asks about (completion and chat forms alike)."""

    def __init__(self, benchmark: Benchmark, examples: Sequence[Example]):
        self.by_prompt: dict[str, Example] = {}
        for ex in examples:
            for chat in (False, True):
                self.by_prompt.setdefault(prompt_key(benchmark.build_prompt(ex, chat=chat)), ex)

    def example(self, prompt: Prompt) -> Example:
        try:
            return self.by_prompt[prompt_key(prompt)]
        except KeyError:
            raise KeyError("the prompt asks about no known example") from None


def row_of(uid: str) -> int:
    return int(uid.rsplit("/", 1)[1])


class FakeTeacher:
    """Answers in the benchmark's format with the gold label (or ``wrong(row)``'s label), then
    runs on into a made-up next exemplar, as an LLM does (a server's stop cuts it)."""

    def __init__(self, benchmark: Benchmark, examples: list[Example],
                 label: Callable[[int, Example, int], str | None] | None = None):
        self.benchmark = benchmark
        self.index = PromptIndex(benchmark, examples)
        self.label = label
        self.calls: Counter[str] = Counter()

    def __call__(self, prompt) -> str:
        ex = self.index.example(prompt)
        self.calls[prompt_key(prompt)] += 1
        label = ex.gold if self.label is None else self.label(row_of(ex.uid), ex, self.calls[prompt_key(prompt)])
        if label is None:
            return "I am not sure what to say here."
        answer = self.benchmark.format_exemplar(
            Exemplar(self.benchmark.prompt_input(ex), f"Thinking about row {row_of(ex.uid)} step by step.", label))
        return answer + "\n\nQ: A made-up next question?\nA: It goes on."

    def fault_by_row(self, plan: Mapping[int, list[str | None]]) -> Callable:
        """faults(prompt, attempt): ``plan[row % len(plan)][attempt - 1]`` (None past the list)."""
        def faults(prompt, attempt):
            row = row_of(self.index.example(prompt).uid)
            steps = plan.get(row % len(plan), [])
            return steps[attempt - 1] if attempt <= len(steps) else None
        return faults


def settings(tmp: Path, **kw) -> Settings:
    base = dict(name="svamp", split="test", data_dir=tmp / "data", out_dir=tmp / "out", teacher_name="fake",
                cache_dir=tmp / "cache", progress=False, fsync=True)
    base.update(kw)
    return Settings(**base)


def run_annotate(args: list[str], env: Mapping[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "annotate.py"), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, **{"timeout": 120, **kw})


def read_sidecar(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
