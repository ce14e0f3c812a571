"""Throughput yardstick: ``python -m distill.bench [train.py overrides ...] [bench.steps=N]``.

Builds exactly what ``train.py`` would (same config, same overrides), trains ``bench.steps``
optimizer steps after ``bench.warmup`` untimed ones, then generates labels for ``bench.eval_batches``
validation batches, and prints:

    train examples/s, train tokens/s (non-pad input + target tokens, both tasks), s/step,
    eval examples/s (label generation), peak memory (CUDA allocator, or the process RSS on CPU)

Nothing is written besides Lightning's scratch directory in a temporary folder.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

REPO_CONF = Path(__file__).resolve().parents[2] / "conf"
BENCH_DEFAULTS = {"steps": 20, "warmup": 3, "eval_batches": 4}


class ThroughputMeter(pl.Callback):
    """Wall time, examples and non-pad tokens of every optimizer step after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.examples = self.tokens = 0
        self.seconds = 0.0
        self.steps = 0
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.warmup and self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            return
        self.examples += batch["label"]["input_ids"].shape[0]
        for task in ("label", "rationale"):
            if task in batch:
                self.tokens += int(batch[task]["attention_mask"].sum()) + int((batch[task]["labels"] != -100).sum())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self._start
            self.steps = trainer.global_step - self.warmup


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def compose_config(argv: list[str]) -> tuple[Any, dict[str, int]]:
    bench = dict(BENCH_DEFAULTS)
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.startswith("bench."):
            if key[len("bench."):] not in bench:
                raise SystemExit(f"unknown option {key}; bench options: {', '.join('bench.' + k for k in bench)}")
            bench[key[len("bench."):]] = int(value)
        else:
            overrides.append(arg)
    import distill  # noqa: F401  (registers the resolvers conf/ uses)

    with initialize_config_dir(config_dir=str(REPO_CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return cfg, bench


def run(argv: list[str]) -> dict[str, float]:
    import hydra

    from distill.runtime import configure_threads
    from distill.train import build_datamodule, build_module

    cfg, bench = compose_config(argv)
    configure_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed)
    with tempfile.TemporaryDirectory() as scratch:
        cfg.paths.output_dir = scratch
        student = hydra.utils.instantiate(cfg.model)
        datamodule = build_datamodule(cfg, student.tokenizer)
        module = build_module(cfg, datamodule, student)
        module.predictions_dir = None
        meter = ThroughputMeter(bench["warmup"])
        from distill.train import build_trainer

        trainer = build_trainer(
            cfg, callbacks=[meter], logger=False, enable_checkpointing=False, enable_progress_bar=False,
            max_steps=bench["warmup"] + bench["steps"], val_check_interval=None, check_val_every_n_epoch=None,
            limit_val_batches=0, default_root_dir=scratch,
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, datamodule=datamodule)
        eval_trainer = hydra.utils.instantiate(
            cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False,
            limit_val_batches=bench["eval_batches"], default_root_dir=scratch,
        )
        module.best_val_acc = float("-inf")
        started = time.perf_counter()
        eval_trainer.validate(module, datamodule=datamodule, verbose=False)
        eval_seconds = time.perf_counter() - started
        eval_examples = min(bench["eval_batches"] * datamodule.eval_batch_size, len(datamodule.examples("val")))
    return {
        "train_examples_per_s": meter.examples / meter.seconds,
        "train_tokens_per_s": meter.tokens / meter.seconds,
        "seconds_per_step": meter.seconds / max(meter.steps, 1),
        "eval_examples_per_s": eval_examples / eval_seconds,
        "peak_memory_mb": peak_memory_mb(),
        "global_batch": cfg.data.batch_size,
        "timed_steps": meter.steps,
        "threads": torch.get_num_threads(),
        "device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "label": f"{cfg.data.benchmark.name} / {cfg.model.short_name} / {cfg.method.name}",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    figures = run(argv)
    print(f"\ndistill bench: {figures.pop('label')}  ({figures.pop('device')}, {figures.pop('threads')} threads)")
    units = {"train_examples_per_s": "examples/s", "train_tokens_per_s": "tokens/s", "seconds_per_step": "s",
             "eval_examples_per_s": "examples/s", "peak_memory_mb": "MiB", "global_batch": "", "timed_steps": ""}
    for key, unit in units.items():
        value = figures[key]
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value}"
        print(f"  {key:<22} {shown:>12} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
