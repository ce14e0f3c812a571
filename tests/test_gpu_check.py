"""scripts/gpu_check.sh (the prepared GPU check) end to end on this CPU in its smoke mode: both
students, plain vs fast vs fast+shared, one step each; its tables, figures and logs under $OUT."""

from __future__ import annotations

import json
import subprocess

import pytest

from train_utils import REPO, subprocess_env

MODES = ("plain", "fast", "fast+shared")


@pytest.mark.shared
@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_in_its_smoke_mode(shared_data, tmp_path):
    env = subprocess_env(GPU_CHECK_SMOKE="1", OUT=str(tmp_path), DISTILL_SHARED_DATA=str(shared_data),
                         DISTILL_CACHE_DIR=str(tmp_path / "cache"),
                         GPU_CHECK_BUDGET_S="1200", GPU_CHECK_RUN_CAP_S="600")  # no time limit at stake here
    env.pop("GPU_CHECK_DATA", None), env.pop("GPU_CHECK_TOKENIZER", None)
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"t5_base_shaped", "smollm2_shaped"}
    for student, by_mode in results.items():
        assert tuple(by_mode) == MODES
        for mode, figures in by_mode.items():
            assert "error" not in figures, (student, mode, figures)
            assert figures["timed_steps"] == 1 and figures["train_examples_per_s"] > 0
            assert figures["eval_examples_per_s"] > 0
        assert by_mode["plain"]["speed"] == "plain" and by_mode["fast"]["speed"] != "plain"
    assert results["smollm2_shaped"]["fast"]["label"].endswith("/ tiny_causal / step_by_step")
    report = (tmp_path / "gpu_check.txt").read_text()
    assert report.count("distill bench: cqa") == 2 and "exit 0" in report
    assert "torch" in (tmp_path / "versions.txt").read_text()
    assert (tmp_path / "nvidia-smi.txt").is_file() and "===== " in (tmp_path / "runs.log").read_text()
