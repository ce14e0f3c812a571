"""Checkpoints of train.py: every run ends validated, with a best checkpoint and last.ckpt, whatever
the validation interval; last.ckpt also every N steps between validations; and a run killed and
resumed from last.ckpt, dropout on, is exactly the run that would have happened (and its training
time counts both processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from step_trace import read_step_trace
from distill.training import train
from train_utils import QUICK, REPO, Killed, compose_train, subprocess_env

ARITH = ["data.benchmark.train_size=64", "data.benchmark.test_size=16"]


def overrides(*extra: str) -> list[str]:
    """QUICK with ``extra`` replacing the keys they name."""
    keys = {e.split("=")[0] for e in extra}
    return [o for o in QUICK if o.split("=")[0] not in keys] + list(extra)


def step_of(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def test_a_run_shorter_than_the_validation_interval_keeps_its_checkpoints(tmp_path, caplog):
    """30 steps with the default interval of 250: validated at step 30, best and last written, and
    eval.py scores the best checkpoint as the run's own test did."""
    run = tmp_path / "run"
    train(compose_train(overrides(*ARITH, "trainer.max_steps=30", "trainer.val_check_interval=250"), run))
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 30 and "val/acc" in results["metrics"]
    best = Path(results["best_checkpoint"])
    assert best.is_file() and best.name.startswith("best-step000030") and step_of(best) == 30
    assert step_of(run / "checkpoints" / "last.ckpt") == 30
    assert "no best checkpoint" not in caplog.text

    subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={best}", "split=test", "model=tiny", *ARITH,
         f"hydra.run.dir={tmp_path / 'eval'}", "trainer.limit_test_batches=1", "data.eval_batch_size=8"],
        cwd=REPO, env=subprocess_env(), check=True, capture_output=True, timeout=300,
    )
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["metrics"]["test/acc"] == pytest.approx(results["metrics"]["test/acc"])


def test_last_checkpoint_every_n_steps_between_validations(tmp_path):
    """Validation only every 100 steps, last.ckpt every 3: killed during step 8, the run has
    last.ckpt of step 6 (at most 3 steps lost)."""
    cfg = compose_train(overrides(*ARITH, "trainer.max_steps=20", "trainer.val_check_interval=100",
                                  "callbacks.last_checkpoint_every_n_steps.every_n_train_steps=3",
                                  "+callbacks.kill._target_=train_utils.KillAtStep", "+callbacks.kill.step=8"),
                        tmp_path)
    with pytest.raises(Killed):
        train(cfg)
    assert step_of(tmp_path / "checkpoints" / "last.ckpt") == 6


def test_last_checkpoint_is_written_once_per_step(tmp_path, monkeypatch):
    """Validation every 2 steps, last.ckpt every 3, 7 steps: last.ckpt is written after steps 2, 3, 4,
    6 (validations and the periodic step 3; step 6 is left to its validation) and 7 (the last step)."""
    import pytorch_lightning as pl

    written: list[tuple[str, int]] = []
    save = pl.Trainer.save_checkpoint

    def spy(trainer, filepath, *args, **kwargs):
        written.append((Path(filepath).name, trainer.global_step))
        return save(trainer, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", spy)
    train(compose_train(overrides(*ARITH, "trainer.max_steps=7",
                                  "callbacks.last_checkpoint_every_n_steps.every_n_train_steps=3"), tmp_path))
    assert [step for name, step in written if name == "last.ckpt"] == [2, 3, 4, 6, 7]


# 16 train examples in batches of 4: an epoch is 4 steps; validation every 2 steps, last.ckpt every 3
RESUME = overrides("data.benchmark.train_size=16", "data.benchmark.test_size=8", "trainer.max_steps=8",
                   "callbacks.last_checkpoint_every_n_steps.every_n_train_steps=3", "model.dropout_rate=0.1",
                   "+callbacks.step_trace._target_=step_trace.StepTrace")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    train(compose_train(RESUME, run))
    return run


@pytest.mark.parametrize("saved_at", [3, 4])  # 3: mid-epoch between validations; 4: an epoch's end, validated
def test_a_resumed_run_with_dropout_is_the_uninterrupted_run(uninterrupted, tmp_path, saved_at):
    """Killed after step ``saved_at`` (last.ckpt of that step), resumed to step 8: the same examples,
    the same losses and the same final weights as the uninterrupted run, bit for bit, although the
    tiny T5 trains with dropout (whose masks come from the restored random states)."""
    killed = compose_train([*RESUME, "+callbacks.kill._target_=train_utils.KillAtStep",
                            f"+callbacks.kill.step={saved_at + 1}"], tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert step_of(last) == saved_at
    trained_before = torch.load(last, map_location="cpu", weights_only=False)["train_seconds"]
    assert trained_before > 0
    train(compose_train([*RESUME, f"ckpt_path={last}"], tmp_path / "resumed"))
    # the resumed run's training time counts the killed process's up to its checkpoint
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["train_seconds"] > trained_before

    straight = {t["step"]: t for t in read_step_trace(uninterrupted / "step_trace.jsonl")}
    resumed = {t["step"]: t for t in read_step_trace(tmp_path / "resumed" / "step_trace.jsonl")}
    assert sorted(resumed) == list(range(saved_at + 1, 9))
    for step, trace in resumed.items():
        assert trace["uids"] == straight[step]["uids"], f"step {step}: other examples"
        assert trace["loss"] == straight[step]["loss"], f"step {step}: loss {trace['loss']} != {straight[step]['loss']}"
    final = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    expected = torch.load(uninterrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == expected["global_step"] == 8
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    assert all(torch.equal(final["state_dict"][k], expected["state_dict"][k]) for k in expected["state_dict"])
