"""The precision a run trained and tested in is recorded (results.json, checkpoint, export) and is
what eval.py, distill.predict and distill.export decode in, so they reproduce the run's test
predictions exactly. Both paths are forced, whatever this CPU would pick (bf16 is slow but small
on an AVX2-only CPU; fp32 on one with AMX or AVX512-BF16). The bf16 probe is settled once per
machine. A checkpoint rebuilds its student from the saved architecture alone: no load report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill import speed as speed_module
from distill.checkpoints import export_student, load_module, load_student_for_inference
from distill.models.inference import InferenceSettings, predict
from distill.train import train
from train_utils import QUICK, REPO, compose_train, subprocess_env

PRECISION = {"true": "bf16-mixed", "false": "32-true"}
#: what transformers prints when a student is rebuilt through its pretrained loader
LOAD_NOISE = ("LOAD REPORT", "corrupted", "newly initialized", "MISSING")


@pytest.fixture(scope="module", params=["true", "false"], ids=["bf16_forced", "fp32_forced"])
def run(request, tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp(f"run_bf16_{request.param}")
    train(compose_train([*QUICK, f"speed.cpu_bf16={request.param}", "data.benchmark.train_size=64",
                         "data.benchmark.test_size=16"], run_dir))
    return run_dir, PRECISION[request.param]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_run_records_its_precision_in_results_and_checkpoints(run):
    run_dir, precision = run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["precision"] == precision
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["precision"] == precision
    assert load_module(results["best_checkpoint"]).settings.precision == precision


def test_predict_and_export_reproduce_the_runs_test_predictions(run, tmp_path):
    run_dir, precision = run
    module = load_module(json.loads((run_dir / "results.json").read_text())["best_checkpoint"])
    records = _records(run_dir / "predictions_test.jsonl")
    inputs = [r["input"] for r in records]
    expected = [r["prediction"] for r in records]
    assert [g["prediction"] for g in predict(module.model, module.tokenizer, module.settings, inputs)] == expected

    out = export_student(module, tmp_path / "export")
    assert InferenceSettings.load(out).precision == precision
    model, tokenizer, settings = load_student_for_inference(out)
    assert [g["prediction"] for g in predict(model, tokenizer, settings, inputs)] == expected


def test_eval_py_decodes_in_the_runs_precision_and_reproduces_its_predictions(run, tmp_path):
    run_dir, precision = run
    ckpt = json.loads((run_dir / "results.json").read_text())["best_checkpoint"]
    done = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}",
         "data.benchmark.train_size=64", "data.benchmark.test_size=16",  # as the run (no .hydra/ in-process)
         "trainer.limit_test_batches=1", "data.eval_batch_size=8", "trainer.enable_progress_bar=false"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["precision"] == precision
    assert _records(tmp_path / "eval" / "predictions_test.jsonl") == _records(run_dir / "predictions_test.jsonl")
    assert not any(noise in done.stdout + done.stderr for noise in LOAD_NOISE)


def test_the_bf16_probe_is_settled_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    speed_module.cpu_bf16_is_faster.cache_clear()
    timings = iter([(2.0, 1.0), (1.0, 2.0)])
    monkeypatch.setattr(speed_module, "_time_matmuls", lambda: next(timings))
    try:
        assert speed_module.cpu_bf16_is_faster() is True  # timed: bf16 twice as fast
        saved = json.loads((tmp_path / "cpu_bf16_probe.json").read_text())
        assert saved["bf16_faster"] is True
        speed_module.cpu_bf16_is_faster.cache_clear()
        assert speed_module.cpu_bf16_is_faster() is True  # read back, not timed again (the next timing says no)
        # a file of another machine or torch build is timed anew
        (tmp_path / "cpu_bf16_probe.json").write_text(json.dumps(dict(saved, key="another machine")))
        speed_module.cpu_bf16_is_faster.cache_clear()
        assert speed_module.cpu_bf16_is_faster() is False
        assert json.loads((tmp_path / "cpu_bf16_probe.json").read_text())["bf16_faster"] is False
    finally:
        speed_module.cpu_bf16_is_faster.cache_clear()


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory) -> Path:
    """One step of the default student: its checkpoint is what users load."""
    run_dir = tmp_path_factory.mktemp("minilm")
    train(compose_train([*(o for o in QUICK if o != "model=tiny"), "model=minilm", "trainer.max_steps=1",
                         "data.benchmark.train_size=32", "data.benchmark.test_size=8"], run_dir))
    return run_dir


def test_a_checkpoint_rebuilds_its_student_without_a_load_report(minilm_run, tmp_path, capfd):
    ckpt = minilm_run / "checkpoints" / "last.ckpt"
    env = subprocess_env()
    predicted = subprocess.run(
        [sys.executable, "-m", "distill.predict", str(ckpt), "A shop had 69 stamps. It sold 21. How many are left?",
         "--rationale"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    exported = subprocess.run(
        [sys.executable, "-m", "distill.export", str(ckpt), str(tmp_path / "export")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    for done in (predicted, exported):
        output = done.stdout + done.stderr
        assert not [noise for noise in LOAD_NOISE if noise in output], output[-3000:]
    capfd.readouterr()
    model, tokenizer, settings = load_student_for_inference(tmp_path / "export")
    assert not [noise for noise in LOAD_NOISE if noise in "".join(capfd.readouterr())]
    inputs = ["A shop had 69 stamps. It sold 21. How many are left?"]
    assert [json.loads(line) for line in predicted.stdout.splitlines()] == predict(model, tokenizer, settings, inputs, True)

    # the weights are the checkpoint's alone: equal to the state dict it saved
    module = load_module(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in saved.items())
