"""A run does what its config says in optimizer steps, whatever the accumulation: validation at the
same optimizer steps, checkpoints only at optimizer-step boundaries; and whatever a run measures or
checks before it trains moves no random stream it trains with (a cold cache computes the losses a
warm one does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl

from distill.data.batching import BatchPlan
from distill.training import build_trainer, train
from train_utils import QUICK, REPO, compose_train, subprocess_env


class StepRecorder(pl.Callback):
    """Appends to ``path`` one JSON line per validation and per checkpoint write: the optimizer step,
    and the micro-batches trained so far."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, event: str, trainer: pl.Trainer) -> None:
        loop = trainer.fit_loop.epoch_loop
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, "step": trainer.global_step,
                                "micro_batches": loop.total_batch_idx + 1}) + "\n")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._write("validate", trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._write("checkpoint", trainer)


def _events(tmp_path: Path, micro_batch_size: int | None) -> list[dict[str, Any]]:
    run_dir = tmp_path / f"micro{micro_batch_size}"
    record = tmp_path / f"events{micro_batch_size}.jsonl"
    overrides = [*QUICK, "trainer.max_steps=7", "trainer.val_check_interval=3", "data.batch_size=8",
                 f"data.micro_batch_size={'null' if micro_batch_size is None else micro_batch_size}",
                 "callbacks.last_checkpoint_every_n_steps.every_n_train_steps=2", "test=false",
                 f"+callbacks.recorder._target_={__name__}.StepRecorder", f"+callbacks.recorder.path={record}"]
    train(compose_train(overrides, run_dir))
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_one_batch_plan_is_handed_to_the_trainer_and_the_data_module(tmp_path):
    """The run's plan is made once, from the config and the trainer's processes, and both take it in one call:
    the trainer accumulates as it says (its validation interval counted in micro-batches), the data module
    samples as it says."""
    cfg = compose_train([*QUICK, "trainer=cpu", "data.batch_size=8", "data.micro_batch_size=2",
                         "trainer.val_check_interval=3"], tmp_path)
    handed: list[BatchPlan] = []
    trainer = build_trainer(cfg, datamodule=SimpleNamespace(connect=handed.append), logger=False)
    assert handed == [BatchPlan(8, 1, 2, 4)]
    assert (trainer.accumulate_grad_batches, trainer.val_check_interval) == (4, 12)
    cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch = 0.5, 1  # a share of an epoch: no steps
    with pytest.raises(ValueError, match="give it in optimizer steps"):
        build_trainer(cfg, logger=False)


@pytest.mark.slow
def test_validation_and_checkpoints_fall_on_the_same_optimizer_steps_with_accumulation(tmp_path):
    whole = _events(tmp_path, None)          # 1 micro-batch of 8 per step
    accumulated = _events(tmp_path, 2)       # 4 micro-batches of 2 per step
    steps = lambda events, kind: [e["step"] for e in events if e["event"] == kind]  # noqa: E731
    # every 3 optimizer steps and at the last (7); last.ckpt every 2 steps between validations
    assert steps(whole, "validate") == steps(accumulated, "validate") == [3, 6, 7]
    assert steps(whole, "checkpoint") == steps(accumulated, "checkpoint")
    assert {2, 4, 3, 6, 7} <= set(steps(accumulated, "checkpoint"))
    for events, accumulate in ((whole, 1), (accumulated, 4)):  # never inside an accumulation window
        assert all(e["micro_batches"] == e["step"] * accumulate for e in events), events


def _losses(run_dir: Path) -> list[float]:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame["train/loss"].dropna().tolist()


@pytest.mark.slow
def test_a_cold_and_a_warm_cache_compute_identical_losses(tmp_path):
    """Dropout on, each run a fresh ``train.py`` process as a user starts it: the first with nothing
    cached, the second with everything cached draw the same random streams, so their losses are
    equal to the last bit."""
    env = subprocess_env(DISTILL_CACHE_DIR=str(tmp_path / "cache"))
    for name in ("cold", "warm"):
        done = subprocess.run([sys.executable, "train.py", *QUICK, "trainer.max_steps=6", "test=false",
                               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / name}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    cold, warm = _losses(tmp_path / "cold"), _losses(tmp_path / "warm")
    assert len(cold) == 6 and cold == warm
