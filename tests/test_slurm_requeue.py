"""Requeue on a real SLURM is submitit's alone, and a requeued run resumes from its last checkpoint.

A 1-job sweep starts training under SLURM with ``ckpt_path=last``; once it has written
``checkpoints/last.ckpt`` the test sends the job SLURM's time-limit warning (``USR2``, what
``--signal=USR2@signal_delay_s`` sends before the limit). submitit's handler requeues the job
(``scontrol requeue``); the job reruns the same Hydra job in the same output directory, Lightning
finds ``last.ckpt`` and continues from its step, and the run completes. Lightning's SLURM
environment has auto-requeue off, so it never requeues on its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_utils import subprocess_env as env

REPO = Path(__file__).resolve().parents[1]
STEPS = 80
EVERY = 20

pytestmark = [pytest.mark.slurm, pytest.mark.slow]




def tail(path: Path, n: int = 40) -> str:
    if not path.is_file():
        return f"({path} missing)"
    return "\n".join(line for line in path.read_text(errors="replace").splitlines()[-n:] if "sacct" not in line)


def test_timeout_signal_requeues_through_submitit_and_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (sinfo missing); CI starts one with .ci/slurm/start.sh")
    sweep = tmp_path / "sweep"
    log = tmp_path / "sweep.log"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "model=tiny", "trainer=cpu",
           "++trainer.plugins=[{_target_: distill.launch.cluster.cluster_environment}]", "logger=csv",
           f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={EVERY}", "data.batch_size=8",
           "test=false", "predictions.write=false", "ckpt_path=last",
           "+callbacks.step_trace._target_=step_trace.StepTrace",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
           f"hydra.sweep.dir={sweep}"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT)
    try:
        last = sweep / "0" / "checkpoints" / "last.ckpt"
        deadline = time.time() + 300
        while not last.exists():
            assert proc.poll() is None, f"the sweep ended before a checkpoint was written:\n{tail(log)}"
            assert time.time() < deadline, f"no {last} after 300 s:\n{tail(log)}"
            time.sleep(0.5)
        # one job is submitted as a plain job (not an array): its folder is named by its job id
        (job_dir,) = [p.parent for p in sweep.glob(".submitit/*/*_submitted.pkl")]
        job_id = job_dir.name
        time.sleep(1.0)  # let the checkpoint file be complete before the job is interrupted
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, tail(log)

    job_log = tail(job_dir / f"{job_id}_0_log.err", 400)
    assert "Caught signal SIGUSR2" in job_log, job_log
    assert f"JOB {job_id} ON" in job_log and "DUE TO JOB REQUEUE" in job_log, job_log  # slurmstepd's word

    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "ok" and results["global_step"] == STEPS

    from step_trace import read_step_trace

    steps = [r["step"] for r in read_step_trace(sweep / "0" / "step_trace.jsonl")]
    # the rerun continued from a checkpoint (a multiple of EVERY steps in), not from step 1:
    # steps after that checkpoint and before the signal were trained twice, none before it
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    assert repeated, "no step was trained twice: the job was not interrupted and resumed"
    assert repeated[0] > EVERY - 1 and (repeated[0] - 1) % EVERY == 0, repeated
    assert steps.count(1) == 1 and max(steps) == STEPS
    assert {r["environment"] for r in read_step_trace(sweep / "0" / "step_trace.jsonl")} == {"SLURMEnvironment"}
    assert "Restoring states from the checkpoint path at" in (sweep / "0" / "train.log").read_text()
