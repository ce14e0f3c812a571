"""``python -m distill.bench``: the speed modes (and the shared-input layout) measured in fresh
processes, side by side."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from distill.bench import main as bench_main, mode_overrides, non_embedding_parameters
from distill.callbacks.throughput import ThroughputMeter, computed_positions
from distill.data.shared_input import pad_decoder_task, pad_shared_causal
from distill.methods import METHODS
from distill.models.loaders import load_tiny, load_tiny_causal
from train_utils import REPO, subprocess_env


@pytest.mark.slow
def test_bench_prints_plain_fast_and_shared_side_by_side():
    done = subprocess.run(
        [sys.executable, "-m", "distill.bench", "model=tiny", "bench.steps=2", "bench.warmup=1",
         "bench.eval_batches=1", "bench.profile=1", "data.batch_size=8", "data.eval_batch_size=8",
         "bench.modes=plain,fast,fast+shared"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("distill bench:"):]
    assert "arith / tiny / step_by_step" in table and "global batch 8, 2 timed steps" in table
    assert "plain: plain;" in table
    assert "fast: fused_optimizer, target_only_logits" in table
    assert "fast+shared: fused_optimizer" in table and "layout shared input" in table
    computed = {}
    for figure in ("train_examples_per_s", "train_tokens_per_s", "seconds_per_step", "computed_tokens_per_step",
                   "eval_examples_per_s", "eval_decode_steps_per_batch", "peak_memory_mb", "mfu_percent"):
        row = next(line for line in table.splitlines() if line.strip().startswith(figure))
        plain, fast, shared, *ratios = row.split()[1:6]
        assert all(float(v.replace(",", "")) > 0 for v in (plain, fast, shared))
        assert all(r.endswith("x") for r in ratios) and len(ratios) == 2
        computed[figure] = [float(v.replace(",", "")) for v in (plain, fast, shared)]
    # the same batches; x once instead of twice (and no prefix in the encoder)
    plain, fast, shared = computed["computed_tokens_per_step"]
    assert plain == fast > shared
    # bench.profile: one more step per mode under torch.profiler, not counted in the timed steps
    for mode in ("plain", "fast", "fast+shared"):
        profile = table[table.index(f"{mode}: profile of 1 steps"):]
        assert "top operators by self cpu time total" in profile and "aten::mm" in profile


def test_mfu_counts_encoder_and_decoder_parameters_apart_without_embeddings():
    model, _ = load_tiny(d_model=16, d_ff=32, num_layers=1, num_heads=2)
    counts = non_embedding_parameters(model)
    tables = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    # the vocabulary (shared with the tied output projection) and T5's relative-position tables
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters()) - sum(tables.values())
    assert counts["encoder"] == sum(p.numel() for p in model.encoder.parameters() if id(p) not in tables)
    assert counts["decoder"] > counts["encoder"] > 0  # the decoder adds cross-attention


def test_mfu_counts_a_causal_student_as_all_decoder():
    model, _ = load_tiny_causal(hidden_size=16, intermediate_size=32, num_layers=1)
    counts = non_embedding_parameters(model)
    tables = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    assert counts["encoder"] == 0
    assert counts["decoder"] == sum(p.numel() for p in model.parameters()) - sum(tables.values()) > 0


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_throughput_meter_counts_the_tokens_each_side_of_the_model_sees(kind):
    """seq2seq: the encoder reads the inputs, the decoder the targets; causal: the one decoder reads
    prompt and completion (every non-pad token), and nothing is counted twice."""
    meter = ThroughputMeter(warmup=0)
    meter._start = 0.0
    module = SimpleNamespace(method_spec=METHODS["step_by_step"], student=SimpleNamespace(kind=kind))
    task = {"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
            "target_ids": torch.ones(3), "labels": torch.ones(2, 5 if kind == "causal" else 2)}
    meter.on_train_batch_end(None, module, None, {"label": task, "rationale": task, "uid": ["a", "b"]}, 0)
    expected = {"encoder": 18, "decoder": 6} if kind == "seq2seq" else {"encoder": 0, "decoder": 18}
    assert {side: int(count) for side, count in meter.tokens.items()} == expected
    assert meter.examples == 2
    # every position each forward runs, padding too: 2 tasks x 2 rows x (5 [+ 2 decoder columns])
    assert meter.computed == (28 if kind == "seq2seq" else 20)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_throughput_meter_counts_a_shared_input_batch_once_for_x(kind):
    meter = ThroughputMeter(warmup=0)
    meter._start = 0.0
    module = SimpleNamespace(method_spec=METHODS["step_by_step"], student=SimpleNamespace(kind=kind))
    x, labels, rationales = [[5, 6, 7], [8]], [[1, 2], [3]], [[4, 4, 4], []]
    if kind == "causal":
        batch = {"shared": pad_shared_causal(x, [9], labels, [10], rationales, pad_token_id=0)}
        tokens, computed = {"encoder": 0, "decoder": 3 + 3 + 4 + 1 + 2}, 2 * 10
    else:
        batch = {"shared": {"input_ids": torch.ones(2, 3), "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])},
                 "label": pad_decoder_task([9], labels), "rationale": pad_decoder_task([10], rationales)}
        # the encoder's 2 x 3, then each task's decoder pass: 2 x 3 (label) and 2 x 4 (rationale)
        tokens, computed = {"encoder": 4, "decoder": 3 + 2 + 4}, 2 * 3 + 2 * 3 + 2 * 4
    batch["uid"] = ["a", "b"]
    meter.on_train_batch_end(None, module, None, batch, 0)
    assert {side: int(count) for side, count in meter.tokens.items()} == tokens
    assert meter.computed == computed == computed_positions(batch, module)


def test_bench_modes_name_a_speed_and_optionally_the_shared_layout():
    # each mode names its layout: a decoder-only student's default (the shared input) does not leak into "fast"
    assert mode_overrides("fast") == ["speed=fast", "++method.shared_input=false"]
    assert mode_overrides("plain+shared") == ["speed=plain", "++method.shared_input=true"]
    with pytest.raises(SystemExit, match="fast\\+shared"):
        mode_overrides("fast+stacked")
    with pytest.raises(SystemExit, match="the bench modes set the layout"):
        bench_main(["model=tiny_causal", "method.shared_input=true", "bench.modes=fast"])


def test_throughput_meter_stops_at_the_last_timed_step():
    """Steps after warmup + steps (the profiled ones) are neither timed nor counted."""
    meter = ThroughputMeter(warmup=1, steps=2)
    module = SimpleNamespace(method_spec=METHODS["standard"], student=SimpleNamespace(kind="seq2seq"))
    task = {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "target_ids": torch.ones(2),
            "labels": torch.ones(2, 1)}
    for step in range(5):
        trainer = SimpleNamespace(global_step=step)
        meter.on_train_batch_start(trainer, module, None, 0)
        meter.on_train_batch_end(SimpleNamespace(global_step=step + 1), module, None, {"label": task, "uid": ["a", "b"]}, 0)
    meter.on_train_end(SimpleNamespace(global_step=5), module)
    assert meter.steps == 2 and meter.examples == 4 and meter.seconds > 0
