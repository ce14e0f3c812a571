"""experiment=repro_smollm2_converged: every one of its 40 jobs composes with one protocol, seeds 0-2
of every cell come before seeds 3-4, and early stopping stops both methods by the same rule."""

from __future__ import annotations

import math

import torch
from pytorch_lightning.callbacks import EarlyStopping

import hydra

from test_slurm_experiments import compose_train, sweep_jobs

NAME = "repro_smollm2_converged"


def _jobs() -> list[tuple[list[str], object]]:
    return [(job, compose_train([f"experiment={NAME}", *job])) for job in sweep_jobs(NAME)]


def test_every_job_composes_with_one_protocol():
    jobs = _jobs()
    assert len(jobs) == 40
    cells, protocols = set(), set()
    for _, cfg in jobs:
        cells.add((cfg.data.benchmark.name, cfg.data.fraction, cfg.data.test_subset))
        assert cfg.model.short_name == "smollm2" and cfg.data.label_source == "gold"
        assert cfg.trainer.precision == "bf16-mixed"
        assert cfg.trainer.limit_val_batches is None
        # a val subset whose binomial standard error is at most 2 points (the holdout whole where smaller)
        assert math.sqrt(0.25 / cfg.data.val_subset) <= 0.02
        if cfg.method.name == "step_by_step":
            assert cfg.method.shared_input is True, "decoder-only students default to the shared input"
        stop = cfg.callbacks.early_stopping
        protocols.add((cfg.trainer.max_steps, cfg.trainer.val_check_interval, cfg.data.batch_size, cfg.optimizer.lr,
                       cfg.scheduler.warmup_ratio, stop.monitor, stop.mode, stop.patience, stop.min_delta))
    assert len(protocols) == 1, protocols
    assert cells == {("svamp", 1.0, None), ("cqa", 0.125, None), ("anli1", 1.0, None), ("esnli", 0.125, 2048)}
    seeds = [cfg.seed for _, cfg in jobs]
    assert set(seeds[:24]) == {0, 1, 2} and set(seeds[24:]) == {3, 4}


def _stop_index(callback: EarlyStopping, accuracies: list[float]) -> int | None:
    for i, acc in enumerate(accuracies):
        should_stop, _ = callback._evaluate_stopping_criteria(torch.tensor(acc))
        if should_stop:
            return i
    return None


def test_early_stopping_stops_both_methods_by_the_same_rule():
    by_method = {}
    for job, cfg in _jobs()[:8]:  # seed 0: both methods of every cell
        stopper = hydra.utils.instantiate(cfg.callbacks.early_stopping)  # as train.py builds each callback
        assert isinstance(stopper, EarlyStopping)
        by_method.setdefault(cfg.method.name, []).append(stopper)
    assert set(by_method) == {"standard", "step_by_step"}
    curve = [0.10, 0.30, 0.35, 0.34, 0.35, 0.33, 0.36, 0.30, 0.31, 0.35, 0.36, 0.29, 0.20]
    patience = by_method["standard"][0].patience
    # the best (0.36 at index 6; an equal 0.36 later is no improvement) is followed by `patience` validations
    expected = 6 + patience
    for stoppers in by_method.values():
        for stopper in stoppers:
            assert (stopper.monitor, stopper.patience) == ("val/acc", patience)
            assert _stop_index(stopper, curve) == expected
