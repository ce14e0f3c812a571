"""The model card ``distill.export`` writes beside a student: Hub metadata that ``huggingface_hub``
parses without warnings, the run's figures only where its ``results.json`` has them (and only as
this checkpoint's where the run tested it), and a plain-transformers snippet that prompts the
student in the layout it was trained in: run as written, it prints what ``predict`` predicts."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from distill import export
from distill.models.checkpoints import export_student, load_module
from distill.models.inference import predict
from distill.models.model_card import _base_model, write_model_card
from distill.training import train
from train_utils import QUICK, compose_train

ARITH = ["data.benchmark.train_size=64", "data.benchmark.test_size=16"]
CAUSAL = [o if o != "model=tiny" else "model=tiny_causal" for o in QUICK]
#: the layouts a snippet must prompt in (kind x shared input), one in bf16 autocast
LAYOUTS = {
    "seq2seq": [*QUICK, "method.shared_input=false", "trainer.precision=32-true"],
    "seq2seq_shared_bf16": [*QUICK, "method.shared_input=true", "trainer.precision=bf16-mixed"],
    # a low learning rate keeps the causal student near its random start, whose labels vary with x
    "causal": [*CAUSAL, "method.shared_input=false", "optimizer.lr=1e-5", "trainer.precision=32-true"],
    "causal_shared": [*CAUSAL, "method.shared_input=true", "optimizer.lr=1e-5", "trainer.precision=32-true"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(layout)``: a run dir of that layout laid out as train.py leaves it (its Hydra
    config included), trained once per module."""
    runs: dict[str, Path] = {}

    def run_dir_of(layout: str) -> Path:
        if layout not in runs:
            run_dir = tmp_path_factory.mktemp(f"run_{layout}")
            cfg = compose_train([*LAYOUTS[layout], *ARITH], run_dir)
            train(cfg)
            (run_dir / ".hydra").mkdir()
            OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
            runs[layout] = run_dir
        return runs[layout]

    return run_dir_of


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def load_card(path: Path) -> ModelCard:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ModelCard.load(path)


def snippet(card: ModelCard) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card.text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def run_snippet(code: str, text: str) -> str:
    """What the card's snippet prints for ``text`` (its ``text = ...`` line replaced)."""
    code, count = re.subn(r"^text = .*$", f"text = {text!r}", code, flags=re.M)
    assert count == 1
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<model card>", "exec"), {})
    return printed.getvalue().rstrip("\n")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_snippet_prompts_the_student_as_predict_does(trained, layout, tmp_path):
    run_dir = trained(layout)
    results = results_of(run_dir)
    best = Path(results["best_checkpoint"])
    assert export.main([str(best), str(tmp_path / "export")]) == 0
    card = load_card(tmp_path / "export" / "README.md")
    causal = layout.startswith("causal")
    assert card.data.pipeline_tag == ("text-generation" if causal else "text2text-generation")
    code = snippet(card)
    assert "distill" not in "\n".join(line for line in code.splitlines() if "import" in line)
    assert ("torch.autocast" in code) is layout.endswith("bf16")
    assert (f"path = {str(tmp_path / 'export')!r}") in code

    module = load_module(best)
    assert module.settings.shared_input is layout.endswith(("shared", "shared_bf16"))
    inputs = [json.loads(line)["input"] for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()][:4]
    expected = [p["prediction"] for p in predict(module.model, module.tokenizer, module.settings, inputs)]
    assert any(expected), "all-empty predictions make a weak comparison"
    assert [run_snippet(code, text) for text in inputs] == expected


def test_metadata_and_body_from_the_runs_results(trained, tmp_path):
    run_dir = trained("seq2seq")
    results = results_of(run_dir)
    assert export.main([results["best_checkpoint"], str(tmp_path / "export")]) == 0
    card = load_card(tmp_path / "export" / "README.md")
    data = card.data
    assert data.base_model is None  # model=tiny: random weights, no pretrained base
    assert data.library_name == "transformers" and data.pipeline_tag == "text2text-generation"
    assert data.tags == ["distill", "distilling-step-by-step", "step_by_step", "arith"]
    assert data.datasets == ["arith"] and data.metrics == ["accuracy"]
    [result] = data.eval_results
    assert (result.dataset_name, result.dataset_split, result.metric_type) == ("arith", "test", "accuracy")
    assert result.metric_value == results["metrics"]["test/acc"]
    body = card.text
    assert "Distilling Step-by-Step" in body and "| benchmark | arith |" in body
    assert "| method | step_by_step (λ = 1.0) |" in body and "| teacher | generated |" in body
    assert f"| optimizer steps | {results['global_step']} |" in body
    assert f"| test accuracy | {results['metrics']['test/acc']:.4f} (majority class" in body
    assert len(body.splitlines()) <= 40


def test_a_checkpoint_the_run_did_not_test_gets_no_accuracy_of_its_own(trained, tmp_path):
    run_dir = trained("seq2seq")
    results = results_of(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    steps = {torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in (last, Path(results["best_checkpoint"]))}
    assert export.run_record(results["best_checkpoint"])["tested"] is True
    assert export.run_record(last)["tested"] is (len(steps) == 1)

    card = load_card(write_model_card(tmp_path, load_module(last), {**export.run_record(last), "tested": False}))
    assert card.data.eval_results is None
    assert "| test accuracy | not measured on this checkpoint (the run tested `best-" in card.text


def test_without_results_the_card_says_what_the_module_knows(trained, tmp_path):
    run_dir = trained("causal_shared")
    lone = tmp_path / "elsewhere" / "student.ckpt"
    lone.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", lone)
    assert export.run_record(lone) is None
    assert export.main([str(lone), str(tmp_path / "export")]) == 0
    card = load_card(tmp_path / "export" / "README.md")
    assert card.data.eval_results is None and card.data.datasets is None and card.data.base_model is None
    assert card.data.tags == ["distill", "distilling-step-by-step", "step_by_step"]
    assert card.data.pipeline_tag == "text-generation"
    assert "accuracy |" not in card.text and "benchmark |" not in card.text and "seed |" not in card.text
    assert "| method | step_by_step (λ = 1.0) |" in card.text
    assert "| input layout | shared input: x, then the task marker |" in card.text
    # export_student alone (no run) writes the same card
    plain = load_card(export_student(load_module(lone), tmp_path / "plain") / "README.md")
    assert plain.text == card.text.replace(str(tmp_path / "export"), str(tmp_path / "plain"))


def test_base_model_names_the_pretrained_weights_where_there_are_some(tmp_path):
    assert _base_model({"kind": "minilm", "name_or_path": None}) == "sentence-transformers/all-MiniLM-L6-v2"
    assert _base_model({"kind": "smollm2", "name_or_path": str(tmp_path)}) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert _base_model({"kind": "causal", "name_or_path": "Qwen/Qwen2.5-0.5B"}) == "Qwen/Qwen2.5-0.5B"
    assert _base_model({"kind": "auto", "name_or_path": "google/flan-t5-small"}) == "google/flan-t5-small"
    assert _base_model({"kind": "causal", "name_or_path": str(tmp_path)}) is None  # a local directory
    assert _base_model({"kind": "tiny", "name_or_path": None}) is None
    assert _base_model({"kind": "tiny_causal", "name_or_path": None}) is None
