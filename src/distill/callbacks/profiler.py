"""Where a step's time goes: ``torch.profiler`` over the last optimizer steps of a fit."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class StepProfiler(pl.Callback):
    """``torch.profiler`` over the optimizer steps from ``first`` on (to the end of fit): a summary
    of where a step's time goes, as text."""

    def __init__(self, first: int, steps: int) -> None:
        self.first, self.steps = first, steps
        self.profiler: torch.profiler.profile | None = None
        self.summary = ""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.profiler is None and trainer.global_step >= self.first:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.profiler is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = (time.perf_counter() - self._start) / self.steps
        self.profiler.__exit__(None, None, None)
        self.summary = profile_summary(self.profiler, wall, self.steps)


def profile_summary(profiler: torch.profiler.profile, wall_per_step: float, steps: int) -> str:
    """Per step: wall time, the device's busy time and kernel launches (GPU), top operators."""
    events = profiler.key_averages()
    on_gpu = torch.cuda.is_available()
    lines = [f"profile of {steps} steps: {wall_per_step * 1e3:.1f} ms wall per step"]
    if on_gpu:
        busy = sum(e.self_device_time_total for e in events) / 1e3 / steps  # microseconds -> ms
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        lines.append(f"  GPU kernels busy {busy:.1f} ms per step ({100 * busy / (wall_per_step * 1e3):.0f}% of the wall), "
                     f"{launches / steps:,.0f} kernel launches per step")
    sort = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    total = sum(getattr(e, sort) for e in events) or 1
    lines.append(f"  top operators by {sort.replace('_', ' ')} (share of all operators' self time):")
    for e in sorted(events, key=lambda e: getattr(e, sort), reverse=True)[:12]:
        lines.append(f"    {e.key[:48]:<48} {getattr(e, sort) / 1e3 / steps:>9.1f} ms/step {100 * getattr(e, sort) / total:>5.1f}%"
                     f"  x{e.count / steps:,.0f}")
    return "\n".join(lines)
