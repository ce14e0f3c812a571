"""train.py end to end on model=tiny: every method on every benchmark of the release, resume,
eval/predict/export of the saved checkpoint, and a multirun sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from distill.models.checkpoints import export_student, load_module
from distill.models.inference import InferenceSettings, predict
from distill.training import train
from train_utils import QUICK, REPO, compose_train, subprocess_env

NO_TRAIN_FILE = {"esnli", "anli1"}  # ../shared/datasets has no train file for these: valid serves as train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenized")


def benchmark_overrides(name: str, shared_data: Path, cache_dir: Path) -> list[str]:
    overrides = [f"data={name}", f"paths.data_dir={shared_data}", f"paths.cache_dir={cache_dir}"]
    if name in NO_TRAIN_FILE:
        overrides.append("data.split_files.train=valid")
    return overrides


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("method", ["standard", "step_by_step", "single_task"])
@pytest.mark.parametrize("task", ["esnli", "anli1", "cqa", "svamp"])
def test_each_method_on_each_benchmark(task, method, shared_data, cache_dir, tmp_path):
    cfg = compose_train([*QUICK, f"method={method}", *benchmark_overrides(task, shared_data, cache_dir)], tmp_path)
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["global_step"] == 4
    assert results["config"]["benchmark"] == task and results["config"]["method"] == method
    metrics = results["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["val/acc_best"] <= 1.0
    steps = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert steps["train/loss_label"].notna().sum() == 4
    if method == "step_by_step":
        assert steps["train/loss_rationale"].notna().sum() > 0
    else:
        assert "train/loss_rationale" not in steps or steps["train/loss_rationale"].isna().all()
    predictions = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(predictions) == 8  # limit_test_batches=1 of eval_batch_size=8
    assert {"uid", "input", "gold", "prediction", "correct"} <= set(predictions[0])
    assert all(p["gold"] for p in predictions)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A 4-step run on arith whose checkpoints the next tests reuse."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train([*QUICK, "data.benchmark.train_size=64", "data.benchmark.test_size=16"], run_dir)
    train(cfg)
    return run_dir


def test_run_writes_results_checkpoints_and_predictions(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    assert results["global_step"] == 4
    assert Path(results["best_checkpoint"]).is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert results["metrics"]["test/majority_baseline"] > 0
    assert len((trained_run / "predictions_test.jsonl").read_text().splitlines()) == 8


def test_keep_checkpoints_false_deletes_them_after_the_test_and_keeps_the_results(tmp_path):
    cfg = compose_train([*QUICK, "data.benchmark.train_size=64", "data.benchmark.test_size=16", "keep_checkpoints=false"],
                        tmp_path)
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["best_checkpoint"] is None and "test/acc" in results["metrics"]
    assert not (tmp_path / "checkpoints").exists()
    assert len((tmp_path / "predictions_test.jsonl").read_text().splitlines()) == 8


@pytest.mark.parametrize("model", ["tiny", "tiny_causal"])
def test_resume_continues_at_the_saved_step_on_the_same_examples(tmp_path, model):
    """Stop at step 4 of a 16-step epoch, resume to step 6: the resumed run trains steps 4 and 5
    only, on the very examples an uninterrupted 6-step run used at those steps (a seq2seq and a
    decoder-only student)."""
    common = [*(o for o in QUICK if o != "model=tiny"), f"model={model}", "data.benchmark.train_size=64", "data.benchmark.test_size=16",
              "+callbacks.step_trace._target_=step_trace.StepTrace"]
    train(compose_train([*common, "trainer.max_steps=6"], tmp_path / "straight"))
    train(compose_train([*common, "trainer.max_steps=4"], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    train(compose_train([*common, "trainer.max_steps=6", f"ckpt_path={last}"], tmp_path / "resumed"))

    results = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert results["global_step"] == 6
    logged = pd.read_csv(tmp_path / "resumed" / "csv" / "metrics.csv")
    trained_steps = sorted(logged.loc[logged["train/loss"].notna(), "step"].unique())
    assert trained_steps == [4, 5], f"the resumed run should train steps 4 and 5 only, trained {trained_steps}"

    from step_trace import read_step_trace

    straight = {t["step"]: t["uids"] for t in read_step_trace(tmp_path / "straight" / "step_trace.jsonl")}
    resumed = {t["step"]: t["uids"] for t in read_step_trace(tmp_path / "resumed" / "step_trace.jsonl")}
    assert sorted(resumed) == [5, 6]
    assert all(resumed[step] == straight[step] for step in (5, 6)), "resumed on other examples"


def _inputs(run_dir: Path) -> list[str]:
    return [json.loads(line)["input"] for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]


def test_predict_matches_the_runs_own_test_predictions(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    module = load_module(results["best_checkpoint"])
    records = [json.loads(line) for line in (trained_run / "predictions_test.jsonl").read_text().splitlines()]
    got = predict(module.model, module.tokenizer, module.settings, [r["input"] for r in records])
    assert [g["prediction"] for g in got] == [r["prediction"] for r in records]


def test_export_loads_with_plain_transformers_and_predicts_the_same(trained_run, tmp_path):
    module = load_module(trained_run / "checkpoints" / "last.ckpt")
    out = export_student(module, tmp_path / "export")
    model = AutoModelForSeq2SeqLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    settings = InferenceSettings.load(out)
    assert settings == module.settings
    inputs = _inputs(trained_run)
    expected = predict(module.model, module.tokenizer, module.settings, inputs, with_rationale=True)
    got = predict(model, tokenizer, settings, inputs, with_rationale=True)
    assert got == expected
    assert all("rationale" in g for g in got)




def test_eval_and_predict_commands_on_the_saved_checkpoint(trained_run, tmp_path):
    ckpt = json.loads((trained_run / "results.json").read_text())["best_checkpoint"]
    subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={ckpt}", "split=test", "model=tiny",
         "data.benchmark.train_size=64", "data.benchmark.test_size=16", f"hydra.run.dir={tmp_path / 'eval'}",
         "trainer.limit_test_batches=1", "data.eval_batch_size=8"],
        cwd=REPO, env=subprocess_env(), check=True, capture_output=True, timeout=300,
    )
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    run_acc = json.loads((trained_run / "results.json").read_text())["metrics"]["test/acc"]
    assert evaluated["metrics"]["test/acc"] == pytest.approx(run_acc)
    assert (tmp_path / "eval" / "predictions_test.jsonl").read_text() == (trained_run / "predictions_test.jsonl").read_text()

    inputs = _inputs(trained_run)[:2]
    out = subprocess.run(
        [sys.executable, "-m", "distill.predict", ckpt, *inputs], cwd=REPO, env=subprocess_env(), check=True,
        capture_output=True, text=True, timeout=300,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["input"] for line in lines] == inputs and all("prediction" in line for line in lines)


@pytest.mark.slow
def test_multirun_sweep_over_method_and_fraction(tmp_path):
    sweep_dir = tmp_path / "sweep"
    subprocess.run(
        [sys.executable, "train.py", "-m", "method=standard,step_by_step", "data.fraction=0.5,1.0", *QUICK,
         "data.benchmark.train_size=64", "data.benchmark.test_size=16", "trainer.max_steps=2",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=subprocess_env(), check=True, capture_output=True, timeout=600,
    )
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    assert len(results) == 4
    combos = {(r["config"]["method"], r["config"]["fraction"]) for r in results}
    assert combos == {("standard", 0.5), ("standard", 1.0), ("step_by_step", 0.5), ("step_by_step", 1.0)}
    assert all(r["status"] == "ok" and r["global_step"] == 2 for r in results)


def test_any_local_seq2seq_directory_trains_with_model_hf(trained_run, tmp_path):
    """model=hf takes a hub name or a local directory through the Auto classes: here a student
    exported by distill.export (a T5 with a BERT tokenizer) trains on."""
    exported = export_student(load_module(trained_run / "checkpoints" / "last.ckpt"), tmp_path / "export")
    cfg = compose_train(
        [*QUICK, "model=hf", f"model.name_or_path={exported}", "data.benchmark.train_size=32",
         "data.benchmark.test_size=8", "trainer.max_steps=2"],
        tmp_path / "run",
    )
    train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "ok" and results["global_step"] == 2
    assert results["config"]["model"] == str(exported)


def test_predictions_carry_generated_rationales_when_asked(tmp_path):
    cfg = compose_train(
        [*QUICK, "predictions.with_rationale=true", "data.benchmark.train_size=32", "data.benchmark.test_size=8",
         "trainer.max_steps=2"],
        tmp_path,
    )
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(isinstance(r.get("rationale"), str) for r in records)


def test_the_minilm_students_dropout_is_set_by_its_config():
    from distill.models.student import load_student

    student = load_student(kind="minilm", dropout=0.0)
    config = student.model.config
    assert {config.encoder.hidden_dropout_prob, config.encoder.attention_probs_dropout_prob,
            config.decoder.hidden_dropout_prob, config.decoder.attention_probs_dropout_prob} == {0.0}
    assert load_student(kind="minilm").model.config.encoder.hidden_dropout_prob == 0.1  # the checkpoint's own
