"""The precision a run trained in, which it also generated in during its own evaluation and test, is
recorded (results.json, checkpoint, export); eval.py, distill.predict and distill.export decode in the
generation precision, so they reproduce the run's test predictions exactly. Every path is forced,
whatever this CPU would pick (bf16 is slow but small on an AVX2-only CPU; fp32 on one with AMX or
AVX512-BF16). The precision is decided by the config and the CPU's features, never timed. A checkpoint
rebuilds its student from the saved architecture alone: no load report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.utils import speed as speed_module
from distill.models.checkpoints import export_student, load_module, load_student_for_inference
from distill.models.inference import InferenceSettings, predict
from distill.training import train
from train_utils import QUICK, REPO, compose_train, subprocess_env

#: speed overrides -> (the precision the run trains in, the one it generates in)
RUNS = {
    "bf16_forced": (["speed.cpu_bf16=true"], "bf16-mixed", "bf16-mixed"),
    "fp32_forced": (["speed.cpu_bf16=false"], "32-true", "32-true"),
}
#: what transformers prints when a student is rebuilt through its pretrained loader
LOAD_NOISE = ("LOAD REPORT", "corrupted", "newly initialized", "MISSING")


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory) -> tuple[Path, str, str]:
    """A run dir, the precision it trained in and the one it generated in."""
    overrides, trained, generated = RUNS[request.param]
    run_dir = tmp_path_factory.mktemp(f"run_{request.param}")
    train(compose_train([*QUICK, *overrides, "data.benchmark.train_size=64", "data.benchmark.test_size=16"], run_dir))
    return run_dir, trained, generated


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_run_records_its_precisions_in_results_and_checkpoints(run):
    run_dir, trained, generated = run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["precision"] == trained
    # named apart only where it differs from the training precision
    assert results["config"].get("generation_precision", trained) == generated
    assert ("generation_precision" in results["config"]) is (generated != trained)
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert (saved["precision"], saved["generation_precision"]) == (trained, generated)
    module = load_module(results["best_checkpoint"])
    assert (module.run_precision, module.settings.precision) == (trained, generated)


def test_predict_and_export_reproduce_the_runs_test_predictions(run, tmp_path):
    run_dir, _, precision = run
    module = load_module(json.loads((run_dir / "results.json").read_text())["best_checkpoint"])
    records = _records(run_dir / "predictions_test.jsonl")
    inputs = [r["input"] for r in records]
    expected = [r["prediction"] for r in records]
    assert [g["prediction"] for g in predict(module.model, module.tokenizer, module.settings, inputs)] == expected

    out = export_student(module, tmp_path / "export")
    assert InferenceSettings.load(out).precision == precision
    model, tokenizer, settings = load_student_for_inference(out)
    assert [g["prediction"] for g in predict(model, tokenizer, settings, inputs)] == expected


def test_eval_py_decodes_in_the_runs_generation_precision_and_reproduces_its_predictions(run, tmp_path):
    run_dir, _, precision = run
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


@pytest.mark.parametrize("flags, native", [({"avx2"}, None), ({"avx2", "avx512_bf16"}, "AVX512-BF16"),
                                           ({"avx512_bf16", "amx_bf16", "amx_tile"}, "AMX")],
                         ids=["avx2", "avx512_bf16", "amx"])
def test_the_cpu_kind_comes_from_its_features_and_decides_the_auto_precision(flags, native, monkeypatch, tmp_path):
    """``trainer.precision=auto`` on a CPU: bf16-mixed where the features say native bf16, else
    32-true; generation in the run's own precision. Every kind is forced, whatever this CPU is."""
    from distill.training import build_speed, choose_precision

    monkeypatch.setattr(speed_module, "_cpu_flags", lambda: set(flags))
    assert speed_module.native_bf16() == native
    cfg = compose_train([*QUICK, "trainer=cpu"], tmp_path)
    speed = build_speed(cfg)
    precision, reason = choose_precision(cfg, speed)
    assert precision == ("bf16-mixed" if native else "32-true")
    assert (native or "no native bf16") in reason
    # a pinned precision is what runs, on every kind
    for pinned in ("32-true", "bf16-mixed"):
        assert choose_precision(compose_train([*QUICK, "trainer=cpu", f"trainer.precision={pinned}"], tmp_path),
                                speed)[0] == pinned
    assert choose_precision(compose_train([*QUICK, "trainer=cpu", "speed.cpu_bf16=false"], tmp_path),
                            build_speed(compose_train([*QUICK, "speed.cpu_bf16=false"], tmp_path)))[0] == "32-true"
    # a recipe that refuses emulated bf16 starts only where bf16 is native
    strict = compose_train([*QUICK, "trainer=cpu", "trainer.precision=bf16-mixed", "refuse_emulated_bf16=true"], tmp_path)
    if native:
        assert choose_precision(strict, speed)[0] == "bf16-mixed"
    else:
        with pytest.raises(SystemExit, match="without native bf16"):
            choose_precision(strict, speed)


@pytest.mark.slow
def test_two_processes_choose_the_same_precision_whatever_the_load(tmp_path):
    """The same config in two fresh processes, each with its own empty cache, one while every core
    is busy: the same precision, for the same reason (no timing decides it)."""
    script = ("import distill, json; from train_utils import compose_train; "
              "from distill.training import build_speed, choose_precision; "
              f"cfg = compose_train(['model=tiny', 'trainer=cpu'], {str(tmp_path)!r}); "
              "print(json.dumps(choose_precision(cfg, build_speed(cfg))))")

    def choose(cache: str) -> list[str]:
        env = {**subprocess_env(), "DISTILL_CACHE_DIR": str(tmp_path / cache),
               "PYTHONPATH": str(REPO / "tests") + ":" + subprocess_env().get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    quiet = choose("quiet")
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"])
               for _ in range(4)]
    try:
        busy = choose("busy")
    finally:
        for burner in burners:
            burner.kill()
    assert busy == quiet


def test_generation_runs_in_bf16_inside_a_bf16_mixed_trainer_and_in_its_replay(tmp_path):
    """The student's output projection sees bf16 during a bf16-mixed validation and in predict()
    from the settings the run records; both give the same labels."""
    import pytorch_lightning as pl

    from distill.utils.speed import Speed
    from train_utils import module_and_train_batch

    speed = Speed(cpu_bf16=True)
    module, _, dm = module_and_train_batch(
        {"kind": "tiny", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2}, speed, with_datamodule=True
    )
    module.predictions_dir = str(tmp_path)
    dtypes: list[torch.dtype] = []
    module.model.lm_head.register_forward_hook(lambda _module, _inputs, output: dtypes.append(output.dtype))
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
    trainer.validate(module, datamodule=dm, verbose=False)
    expected = torch.bfloat16
    assert dtypes and set(dtypes) == {expected}
    assert (module.run_precision, module.settings.precision) == ("bf16-mixed", "bf16-mixed")

    validated = _records(tmp_path / "predictions_val.jsonl")
    dtypes.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's bf16 context changes nothing
        replayed = predict(module.model, module.tokenizer, module.settings, [r["input"] for r in validated])
    assert dtypes and set(dtypes) == {expected}
    assert [r["prediction"] for r in replayed] == [r["prediction"] for r in validated]


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
