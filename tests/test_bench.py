"""``python -m distill.bench``: both speed modes measured in fresh processes, side by side."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from distill.bench import ThroughputMeter, non_embedding_parameters
from distill.models.student import load_tiny, load_tiny_causal
from train_utils import REPO, subprocess_env


@pytest.mark.slow
def test_bench_prints_plain_and_fast_side_by_side():
    done = subprocess.run(
        [sys.executable, "-m", "distill.bench", "model=tiny", "bench.steps=2", "bench.warmup=1",
         "bench.eval_batches=1", "bench.profile=1", "data.batch_size=8", "data.eval_batch_size=8"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("distill bench:"):]
    assert "arith / tiny / step_by_step" in table and "global batch 8, 2 timed steps" in table
    assert "plain: plain;" in table
    assert "fast: fused_optimizer, target_only_logits" in table  # on CPU: no stacking, no pinning
    for figure in ("train_examples_per_s", "train_tokens_per_s", "seconds_per_step", "eval_examples_per_s",
                   "peak_memory_mb", "mfu_percent"):
        row = next(line for line in table.splitlines() if line.strip().startswith(figure))
        plain, fast, ratio = row.split()[1:4]
        assert float(plain.replace(",", "")) > 0 and float(fast.replace(",", "")) > 0
        assert ratio.endswith("x")
    # bench.profile: one more step per mode under torch.profiler, not counted in the timed steps
    for mode in ("plain", "fast"):
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
    module = SimpleNamespace(method="step_by_step", student=SimpleNamespace(kind=kind))
    task = {"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
            "target_ids": torch.ones(3)}
    meter.on_train_batch_end(None, module, None, {"label": task, "rationale": task}, 0)
    expected = {"encoder": 18, "decoder": 6} if kind == "seq2seq" else {"encoder": 0, "decoder": 18}
    assert {side: int(count) for side, count in meter.tokens.items()} == expected
    assert meter.examples == 2


def test_throughput_meter_stops_at_the_last_timed_step():
    """Steps after warmup + steps (the profiled ones) are neither timed nor counted."""
    meter = ThroughputMeter(warmup=1, steps=2)
    module = SimpleNamespace(method="standard", student=SimpleNamespace(kind="seq2seq"))
    task = {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "target_ids": torch.ones(2)}
    for step in range(5):
        trainer = SimpleNamespace(global_step=step)
        meter.on_train_batch_start(trainer, module, None, 0)
        meter.on_train_batch_end(SimpleNamespace(global_step=step + 1), module, None, {"label": task}, 0)
    meter.on_train_end(SimpleNamespace(global_step=5), module)
    assert meter.steps == 2 and meter.examples == 4 and meter.seconds > 0
