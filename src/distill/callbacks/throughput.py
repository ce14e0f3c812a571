"""Throughput of a fit: wall time, examples and tokens per optimizer step (``python -m distill.bench``)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

from distill.models.student import CAUSAL


def _tasks(batch: Any, module: pl.LightningModule) -> list[Any]:
    """The task batches of a (paper-layout) batch that a train step runs."""
    learns_rationale = "rationale" in batch and module.method_spec.rationale_task
    return [batch["label"], *([batch["rationale"]] if learns_rationale else [])]


class ThroughputMeter(pl.Callback):
    """Wall time, examples and non-pad tokens of every optimizer step after ``warmup`` steps.
    Token counts accumulate on the device and are read once at the end: no per-step sync."""

    def __init__(self, warmup: int, steps: int | None = None) -> None:
        self.warmup = warmup
        self.last = None if steps is None else warmup + steps
        self.examples = 0
        self.tokens: dict[str, Any] = {"encoder": 0, "decoder": 0}
        self.computed = 0
        self.seconds = 0.0
        self.steps = 0
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.warmup and self._start is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._start is None or self.seconds:
            return
        self.examples += len(batch["uid"])
        self.computed += computed_positions(batch, pl_module)
        causal = pl_module.student.kind == CAUSAL
        if "shared" in batch:
            self._count_shared(batch, causal)
        else:
            for task in _tasks(batch, pl_module):
                non_pad = task["attention_mask"].sum()
                if causal:  # one sequence, prompt and completion, through the decoder
                    self.tokens["decoder"] = self.tokens["decoder"] + non_pad
                else:
                    self.tokens["encoder"] = self.tokens["encoder"] + non_pad
                    self.tokens["decoder"] = self.tokens["decoder"] + task["target_ids"].shape[0]
        if self.last is not None and trainer.global_step >= self.last:
            self._stop(trainer)

    def _count_shared(self, batch: Any, causal: bool) -> None:
        shared = batch["shared"]
        if causal:  # x once, then both branches: every non-pad position of the one sequence
            self.tokens["decoder"] = self.tokens["decoder"] + int(shared["spans"].sum())
            return
        self.tokens["encoder"] = self.tokens["encoder"] + shared["attention_mask"].sum()
        for task in ("label", "rationale"):
            if task in batch:  # the marker and the target: the decoder's non-pad inputs
                self.tokens["decoder"] = self.tokens["decoder"] + int((batch[task]["decoder_sequence"] != -100).sum())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None and not self.seconds:
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        self.steps = trainer.global_step - self.warmup
        self.tokens = {side: int(count) for side, count in self.tokens.items()}


def computed_positions(batch: Any, module: pl.LightningModule) -> int:
    """Positions (padding included) that one micro-batch runs through the model: each forward's
    rows x width, encoder and decoder apart."""
    causal = module.student.kind == CAUSAL
    if "shared" in batch:
        decoders = [] if causal else [batch[t]["decoder_sequence"] for t in ("label", "rationale") if t in batch]
        return batch["shared"]["input_ids"].numel() + sum(d.numel() for d in decoders)
    return sum(t["input_ids"].numel() + (0 if causal else t["labels"].numel()) for t in _tasks(batch, module))
