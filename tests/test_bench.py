"""``python -m distill.bench``: both speed modes measured in fresh processes, side by side."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from distill.bench import non_embedding_parameters
from distill.models.student import load_tiny
from train_utils import REPO, subprocess_env


@pytest.mark.slow
def test_bench_prints_plain_and_fast_side_by_side():
    done = subprocess.run(
        [sys.executable, "-m", "distill.bench", "model=tiny", "bench.steps=2", "bench.warmup=1",
         "bench.eval_batches=1", "data.batch_size=8", "data.eval_batch_size=8"],
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


def test_mfu_counts_encoder_and_decoder_parameters_apart_without_embeddings():
    model, _ = load_tiny(d_model=16, d_ff=32, num_layers=1, num_heads=2)
    counts = non_embedding_parameters(model)
    tables = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    # the vocabulary (shared with the tied output projection) and T5's relative-position tables
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters()) - sum(tables.values())
    assert counts["encoder"] == sum(p.numel() for p in model.encoder.parameters() if id(p) not in tables)
    assert counts["decoder"] > counts["encoder"] > 0  # the decoder adds cross-attention
