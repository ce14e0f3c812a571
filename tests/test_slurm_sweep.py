"""A real sweep on a real SLURM: ``python train.py -m hydra/launcher=slurm`` with 4 jobs of the tiny
student runs as a SLURM job array, every job finishes, and ``python -m distill.aggregate`` turns
their results into the paper-style table and a PNG plot.

Needs a running SLURM (CI starts one with ``.ci/slurm/start.sh``); skipped where ``sinfo`` is
missing. The 2-core CI machine runs 2 jobs at a time, 1 CPU and 1 GB each.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_utils import subprocess_env as env
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]




def run(cmd: list[str], log: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if "sacct" not in line and "accounting storage" not in line]
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}; last lines of {log}:\n" + "\n".join(lines[-40:]))
    return proc


@pytest.fixture(scope="module")
def slurm() -> None:
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (sinfo missing); CI starts one with .ci/slurm/start.sh")
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if state.returncode != 0 or not state.stdout.strip():
        pytest.fail(f"sinfo is installed but SLURM does not answer ({state.stderr.strip()}): run .ci/slurm/start.sh")


def test_sweep_of_four_jobs_runs_under_slurm_and_aggregates(slurm: None, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run([sys.executable, "train.py", "-m", "hydra/launcher=slurm",
         "model=tiny", "trainer=cpu", "logger=csv", "trainer.max_steps=4", "trainer.val_check_interval=4",
         "data.batch_size=8", "optimizer.lr=3e-3", "predictions.write=false",
         "method=standard,step_by_step", "data.fraction=0.5,1.0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.array_parallelism=2",
         "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"], tmp_path / "sweep.log")

    # one SLURM job array of 4 tasks, 2 at a time
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --ntasks-per-node=1" in text
    array_id = script.parent.name
    seen = set()
    for num in range(4):
        job_dir = sweep / str(num)
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        # hydra.job.id is the SLURM array task id submitit saw inside the job: <array job>_<task>
        assert hydra_cfg["job"]["id"] == f"{array_id}_{num}"
        results = json.loads((job_dir / "results.json").read_text())
        assert results["status"] == "ok", results
        assert results["config"]["model"] == "tiny" and results["global_step"] == 4
        seen.add((results["config"]["method"], results["config"]["fraction"]))
    assert seen == {("standard", 0.5), ("standard", 1.0), ("step_by_step", 0.5), ("step_by_step", 1.0)}

    out = tmp_path / "aggregate"
    run([sys.executable, "-m", "distill.aggregate", str(sweep), "--out", str(out), "--strict"], tmp_path / "aggregate.log")
    md = (out / "results.md").read_text()
    assert "4 successful run(s), 0 failed" in md
    assert "| method | 50% | 100% |" in md
    assert "| standard finetuning |" in md and "| distilling step-by-step |" in md
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (out / "accuracy_vs_fraction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
