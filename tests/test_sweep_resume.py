"""Resumable sweeps (``resume_sweep: true``, :mod:`distill.launch.sweep_resume`): a 4-job sweep SIGKILLed in
its third job and rerun into the same directory skips jobs 1-2, resumes job 3 from its last.ckpt
(its steps continue) and starts job 4; a job whose run failed or whose config changed is run again,
its old run moved to ``.superseded/``, out of the aggregator's way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.results.runs import read_directory
from step_trace import read_step_trace
from distill.launch.sweep_resume import identity_config, job_fingerprint
from train_utils import REPO, compose_train, subprocess_env

# 16 train examples in batches of 4, 8 steps, validated (and last.ckpt written) every 2 steps; the
# job whose seed is $KILL_TAG is SIGKILLed as step 5 starts (its last.ckpt is of step 4)
SWEEP = [
    "model=tiny", "logger=csv", "threads=1", "predictions.write=false",
    "trainer.max_steps=8", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
    "data.batch_size=4", "data.eval_batch_size=8", "optimizer.lr=1e-3",
    "data.benchmark.train_size=16", "data.benchmark.test_size=8",
    "+callbacks.step_trace._target_=step_trace.StepTrace",
    "+callbacks.kill._target_=train_utils.SigkillAtStep", "+callbacks.kill.step=5", "+callbacks.kill.tag=${seed}",
]


def sweep(sweep_dir: Path, seeds: str, **env: str) -> subprocess.CompletedProcess:
    """``python train.py -m seed=<seeds> ...`` into ``sweep_dir`` (basic launcher: one job after another)."""
    environment = subprocess_env(**env)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), environment["PYTHONPATH"]])
    return subprocess.run([sys.executable, "train.py", "-m", f"seed={seeds}", *SWEEP, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def counts(sweep_dir: Path, skipped: int, resumed: int, started: int) -> str:
    """The line the sweep's end prints."""
    return (f"resume_sweep: {skipped + resumed + started} job(s) in {sweep_dir}: {skipped} skipped (finished), "
            f"{resumed} resumed (from last.ckpt), {started} started")


def step_of(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "sweep_job.json").read_text())


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def rerun_sweep(tmp_path_factory) -> dict:
    """The sweep seed=1,2,3,4, killed in its third job (seed 3), then rerun as it was."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    killed = sweep(sweep_dir, "1,2,3,4", KILL_TAG="3")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert [results(sweep_dir / str(n))["global_step"] for n in (0, 1)] == [8, 8]
    assert not (sweep_dir / "2" / "results.json").exists() and not (sweep_dir / "3").exists()
    assert step_of(sweep_dir / "2" / "checkpoints" / "last.ckpt") == 4
    finished = {n: (sweep_dir / str(n) / "results.json").read_bytes() for n in (0, 1)}
    (sweep_dir / "2" / "step_trace.jsonl").write_text("")  # from here on it holds the steps the rerun trains
    rerun = ok(sweep(sweep_dir, "1,2,3,4"))
    return {"dir": sweep_dir, "stdout": rerun, "finished": finished}


def test_a_killed_sweep_rerun_skips_the_finished_jobs_and_resumes_the_killed_one(rerun_sweep):
    sweep_dir, stdout = rerun_sweep["dir"], rerun_sweep["stdout"]
    assert counts(sweep_dir, skipped=2, resumed=1, started=1) in stdout
    # jobs 1-2: not run again
    for n in (0, 1):
        assert (sweep_dir / str(n) / "results.json").read_bytes() == rerun_sweep["finished"][n]
        assert record(sweep_dir / str(n))["action"] == "skipped"
    # job 3: continued from its step-4 checkpoint to step 8 (a restart would have traced steps 1-8)
    job3 = sweep_dir / "2"
    assert record(job3)["action"] == "resumed" and record(job3)["ckpt_path"] == str(job3 / "checkpoints" / "last.ckpt")
    assert [t["step"] for t in read_step_trace(job3 / "step_trace.jsonl")] == [5, 6, 7, 8]
    assert results(job3)["status"] == "ok" and results(job3)["global_step"] == 8
    assert results(job3)["config"]["seed"] == 3
    # its CSV curve is whole: what the killed process logged (validations at steps 2 and 4) kept as part 1
    import pandas as pd

    before = pd.read_csv(job3 / "csv" / "metrics.part1.csv")
    after = pd.read_csv(job3 / "csv" / "metrics.csv")
    assert before.dropna(subset=["val/acc"])["step"].tolist() == [1, 3]
    assert after.dropna(subset=["val/acc"])["step"].tolist() == [5, 7]
    # job 4: run for the first time
    assert record(sweep_dir / "3")["action"] == "started" and results(sweep_dir / "3")["config"]["seed"] == 4
    assert not (sweep_dir / ".superseded").exists()


def test_a_failed_job_and_a_changed_job_run_again_their_old_runs_moved_aside(rerun_sweep, tmp_path):
    """Job 1's run failed (status "diverged") and job 4's config changed (seed 4 -> 5): both run from
    scratch, the old runs in .superseded/; the other two are skipped. (The sweep directory is a copy
    elsewhere: a job's identity does not depend on where its directory is.)"""
    sweep_dir = tmp_path / "moved"
    shutil.copytree(rerun_sweep["dir"], sweep_dir)
    diverged = {**results(sweep_dir / "0"), "status": "diverged"}
    (sweep_dir / "0" / "results.json").write_text(json.dumps(diverged))

    stdout = ok(sweep(sweep_dir, "1,2,3,5"))
    assert counts(sweep_dir, skipped=2, resumed=0, started=2) in stdout
    assert [record(sweep_dir / str(n))["action"] for n in range(4)] == ["started", "skipped", "skipped", "started"]
    assert "status 'diverged'" in record(sweep_dir / "0")["reason"]
    assert "seed: 4 -> 5" in record(sweep_dir / "3")["reason"]
    assert results(sweep_dir / "0")["status"] == "ok" and results(sweep_dir / "3")["config"]["seed"] == 5
    assert [t["step"] for t in read_step_trace(sweep_dir / "3" / "step_trace.jsonl")] == list(range(1, 9))
    old = sweep_dir / ".superseded"
    assert results(old / "0.1")["status"] == "diverged" and results(old / "3.1")["config"]["seed"] == 4
    assert record(old / "3.1")["config"]["seed"] == 4 and (old / "3.1" / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (sweep_dir / "3").iterdir()) == [
        ".hydra", "checkpoints", "csv", "results.json", "step_trace.jsonl", "sweep_job.json", "train.log"]
    # the aggregator reads the four current runs, never the superseded ones
    runs = read_directory(sweep_dir)
    assert sorted((r.status, r.config.get("seed")) for r in runs) == [("ok", 1), ("ok", 2), ("ok", 3), ("ok", 5)]


def test_a_jobs_identity_ignores_where_it_runs_and_how_it_resumes(tmp_path):
    """Output directory and ckpt_path are not part of a job's identity; its hyperparameters are."""
    base = ["model=tiny", "logger=csv"]

    def fingerprint(overrides: list[str], out: str) -> str:
        return job_fingerprint(identity_config(compose_train(overrides, tmp_path / out)))

    first = fingerprint(base, "a")
    assert fingerprint([*base, "ckpt_path=/elsewhere/last.ckpt", "resume_sweep=false"], "b") == first
    assert fingerprint([*base, "optimizer.lr=3e-3"], "a") != first
    assert fingerprint([*base, "seed=7"], "a") != first


def test_keys_added_to_distill_since_a_run_at_their_defaults_keep_it_finished(tmp_path):
    """A finished job whose record lacks keys a later distill added (not set by the job's overrides)
    is still the same config: skipped, not rerun; the same key set on the command line, a changed
    value or a removed key is a new config."""
    from distill.launch.sweep_resume import SKIPPED, STARTED, decide

    old = {"seed": 1, "data": {"fraction": 0.5}, "method": {"name": "step_by_step"}}
    new = {"seed": 1, "data": {"fraction": 0.5, "rationales": "first"},
           "method": {"name": "step_by_step", "shared_input": False}, "extra": {"a": 1}}
    run_dir = tmp_path / "0"
    run_dir.mkdir()
    (run_dir / "sweep_job.json").write_text(json.dumps({"fingerprint": job_fingerprint(old), "config": old}))
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "metrics": {}}))

    kept = decide(run_dir, new)
    assert kept.action == SKIPPED
    assert "keys added since, at their defaults: data.rationales, method.shared_input, extra" in kept.reason
    assert decide(run_dir, new, frozenset({"method.shared_input"})).action == STARTED  # the command sets it
    assert decide(run_dir, new, frozenset({"extra.a"})).action == STARTED
    changed = {**new, "data": {"fraction": 0.25, "rationales": "first"}}
    assert "data.fraction: 0.5 -> 0.25" in decide(run_dir, changed).reason
    removed = {k: v for k, v in new.items() if k != "seed"}
    assert decide(run_dir, removed).action == STARTED
