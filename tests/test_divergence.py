"""A run whose loss or gradients stop being finite stops at once, says so, exits non-zero, and is
left out of the aggregator's means; steps an fp16 loss scaler skips are not divergence."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from distill import aggregate as agg
from distill.callbacks.divergence import Diverged, StopOnDivergence
from train_utils import REPO, subprocess_env


def test_a_nan_run_stops_at_the_bad_step_with_its_status_and_a_non_zero_exit(tmp_path):
    run = tmp_path / "nan"
    done = subprocess.run(
        [sys.executable, "train.py", "model=tiny", "data=arith", "optimizer.lr=1e38", "trainer.max_steps=30",
         "trainer.val_check_interval=10", "logger=csv", "trainer.enable_progress_bar=false",
         "data.benchmark.train_size=256", "callbacks.last_checkpoint_every_n_steps.every_n_train_steps=1",
         f"hydra.run.dir={run}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0, done.stdout[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "diverged"
    step = results["diverged_at_step"]
    assert 1 <= step < 30 and f"training diverged at step {step}" in results["error"]
    # lr 1e38 makes the first update's weights infinite: the run stops there, before any NaN loss
    assert "non-finite weights" in results["error"] and "loss_label=" in results["error"]
    assert "training diverged at step" in done.stdout + done.stderr
    assert "DIVERGED" in done.stdout  # the run summary says so
    assert not (run / "predictions_test.jsonl").exists() and "test/acc" not in results["metrics"]
    # no checkpoint of the bad step is written; earlier ones stay, with finite weights
    for path in (run / "checkpoints").glob("*.ckpt"):
        saved = torch.load(path, map_location="cpu", weights_only=False)
        assert saved["global_step"] < step
        assert all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point())

    # the aggregator leaves it out of the means and counts it apart
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "results.json").write_text((run / "results.json").read_text())
    ok = dict(results, status="ok", metrics={"test/acc": 0.5, "val/acc_best": 0.5})
    ok["config"] = dict(results["config"], seed=1)
    (sweep / "1").mkdir()
    (sweep / "1" / "results.json").write_text(json.dumps(ok))
    out = agg.aggregate([str(sweep)], tmp_path / "agg")
    assert [r.status for r in out["failed"]] == ["diverged"]
    assert len(out["groups"]) == 1 and out["groups"]["test/acc_mean"].iloc[0] == pytest.approx(0.5)
    md = (tmp_path / "agg" / "results.md").read_text()
    assert "1 successful run(s), 0 failed, 1 diverged" in md


def _trainer(step: int = 4, scaler: bool = False) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, precision_plugin=SimpleNamespace(scaler=object() if scaler else None))


def _optimizer(grad: float) -> SimpleNamespace:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), grad)
    return SimpleNamespace(param_groups=[{"params": [p]}])


def test_a_non_finite_loss_or_gradient_raises_naming_the_step_and_terms():
    guard = StopOnDivergence()
    module = SimpleNamespace(last_losses={"loss": torch.tensor(math.nan), "loss_label": torch.tensor(2.0),
                                          "loss_rationale": torch.tensor(math.nan)})
    with pytest.raises(Diverged, match=r"step 5: non-finite loss \(loss=nan, loss_rationale=nan\)") as err:
        guard.on_before_backward(_trainer(4), module, torch.tensor(math.nan))
    assert err.value.step == 5
    guard.on_before_backward(_trainer(4), module, torch.tensor(1.0))  # finite: nothing
    guard.on_before_optimizer_step(_trainer(4), SimpleNamespace(last_losses={}), _optimizer(1.0))
    with pytest.raises(Diverged, match="non-finite gradient norm"):
        guard.on_before_optimizer_step(_trainer(4), SimpleNamespace(last_losses={}), _optimizer(math.inf))


def test_steps_a_loss_scaler_skips_are_not_divergence_until_too_many_in_a_row():
    guard = StopOnDivergence(max_skipped_steps=3)
    module = SimpleNamespace(last_losses={})
    for _ in range(3):
        guard.on_before_optimizer_step(_trainer(scaler=True), module, _optimizer(math.inf))
    guard.on_before_optimizer_step(_trainer(scaler=True), module, _optimizer(1.0))  # a good step resets the count
    for _ in range(3):
        guard.on_before_optimizer_step(_trainer(scaler=True), module, _optimizer(math.nan))
    with pytest.raises(Diverged, match="4 steps in a row under the loss scaler"):
        guard.on_before_optimizer_step(_trainer(scaler=True), module, _optimizer(math.nan))


def test_non_finite_weights_after_an_update_raise_at_that_step():
    guard = StopOnDivergence()
    module = torch.nn.Linear(2, 2)
    module.last_losses = {"loss": torch.tensor(3.0)}
    guard.on_train_batch_end(_trainer(7), module, None, None, 0)
    with torch.no_grad():
        module.weight[0, 0] = math.inf
    with pytest.raises(Diverged, match=r"step 7: non-finite weights after its update \(losses loss=3\)"):
        guard.on_train_batch_end(_trainer(7), module, None, None, 0)


def test_action_warn_keeps_going(caplog):
    guard = StopOnDivergence(action="warn")
    guard.on_before_backward(_trainer(), SimpleNamespace(last_losses={}), torch.tensor(math.inf))
    assert "going on (action=warn)" in caplog.text
    with pytest.raises(ValueError, match="expected 'stop' or 'warn'"):
        StopOnDivergence(action="ignore")
