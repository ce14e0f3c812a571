"""W&B is the default logger and never prompts or hangs: without a login the run is offline
(syncable later), and no secret in the environment reaches the run directory or the W&B files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distill.utils.runtime import resolve_wandb_mode, scrub_secrets
from train_utils import QUICK, REPO

SECRET = "sk-test-0123456789abcdef-never-log-me"


@pytest.mark.slow
def test_default_wandb_logger_runs_offline_without_a_login_and_keeps_secrets_out(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), NETRC=str(home / ".netrc"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               OPENAI_API_KEY=SECRET, PYTHONPATH=str(REPO / "src"))
    run_dir = tmp_path / "run"
    quick = [o for o in QUICK if not o.startswith("logger=")]
    proc = subprocess.run(
        [sys.executable, "train.py", *quick, "data.benchmark.train_size=32", "data.benchmark.test_size=8",
         "trainer.max_steps=2", f"hydra.run.dir={run_dir}", "tags=[smoke]"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, "expected one offline W&B run to sync later"
    # offline, the config and metrics are records inside run-<id>.wandb (what `wandb sync` uploads)
    record = next(offline_runs[0].glob("run-*.wandb")).read_bytes()
    assert b"step_by_step" in record and b"smoke" in record and b"train/loss" in record
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"
    assert SECRET not in proc.stdout + proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"


def test_wandb_mode(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("auto") == "offline"


def test_scrub_secrets_redacts_keys_but_keeps_the_names_of_env_variables():
    cfg = {"teacher": {"api_key": "sk-x", "api_key_env": "OPENAI_API_KEY", "model": "m"},
           "hf_token": "hf_abc", "list": [{"password": "p"}], "empty_token": None}
    assert scrub_secrets(cfg) == {
        "teacher": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "model": "m"},
        "hf_token": "<redacted>", "list": [{"password": "<redacted>"}], "empty_token": None,
    }
