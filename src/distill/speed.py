"""The speed levers of a run (``conf/speed/``), resolved for the hardware it runs on.

``speed=fast`` (the default) turns on what measured faster without changing what is learned;
``speed=plain`` turns every lever off: the plain eager path, the yardstick ``python -m
distill.bench`` compares against. ``auto`` values are settled here, once, from the device:

=====================  ==========================================================================
fused_optimizer        AdamW's fused kernel (CPU and CUDA) instead of a per-tensor loop
target_only_logits     the vocabulary projection runs on target positions only, not on padding
stack_tasks            label and rationale rows in one forward pass (auto: on CUDA, where a
                       step is launch-bound; off on CPU, where it pads label targets to
                       rationale length for no gain)
pad_to_multiple_of     batch widths rounded up (auto: 8 on CUDA for tensor cores, 1 on CPU)
pin_memory             page-locked host batches for asynchronous copies (auto: on CUDA)
cpu_bf16               bf16 autocast on a CPU whose bf16 matmul beats fp32 (AMX, AVX512-BF16),
                       decided by timing both at start-up; never on AVX2-only CPUs, where bf16
                       matmul is two orders of magnitude slower than fp32
=====================  ==========================================================================
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["Speed", "PLAIN", "resolve_speed", "cpu_bf16_is_faster"]


@dataclass(frozen=True)
class Speed:
    fused_optimizer: bool = False
    target_only_logits: bool = False
    stack_tasks: bool = False
    pad_to_multiple_of: int = 1
    pin_memory: bool = False
    cpu_bf16: bool = False

    @property
    def fast_losses(self) -> bool:
        """Whether the task losses take the fast path (:func:`distill.models.losses.task_losses`)."""
        return self.target_only_logits or self.stack_tasks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The levers that are on, in words (``plain`` when none is)."""
        on = [name if value is True else f"{name}={value}"
              for name, value in self.as_dict().items() if value is True or (value is not False and value != 1)]
        return ", ".join(on) or "plain"


#: every lever off
PLAIN = Speed()


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster(margin: float = 1.5) -> bool:
    """Whether a bf16 matmul on this CPU beats fp32 by ``margin``: timed, because instruction-set
    flags do not say how fast a build's kernels are. Small shapes keep the probe under 0.1 s even
    where bf16 is emulated."""
    a32, b32 = torch.randn(128, 512), torch.randn(512, 512)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def seconds(a: torch.Tensor, b: torch.Tensor) -> float:
        torch.mm(a, b)
        started = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        return time.perf_counter() - started

    fp32, bf16 = seconds(a32, b32), seconds(a16, b16)
    log.info("cpu bf16 probe: fp32 %.2f ms, bf16 %.2f ms per matmul", fp32 / 3e-3, bf16 / 3e-3)
    return bf16 * margin < fp32


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def resolve_speed(cfg: Mapping[str, Any] | None, on_cuda: bool) -> Speed:
    """``conf/speed/*.yaml`` with every ``auto`` settled for a run on CUDA (``on_cuda``) or CPU."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(Speed.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown speed settings {sorted(unknown)}; known: {sorted(Speed.__dataclass_fields__)}")
    cpu_bf16 = _auto(cfg.get("cpu_bf16", False), "probe")
    return Speed(
        fused_optimizer=bool(cfg.get("fused_optimizer", False)),
        target_only_logits=bool(cfg.get("target_only_logits", False)),
        stack_tasks=bool(_auto(cfg.get("stack_tasks", False), on_cuda)),
        pad_to_multiple_of=int(_auto(cfg.get("pad_to_multiple_of", 1), 8 if on_cuda else 1)),
        pin_memory=bool(_auto(cfg.get("pin_memory", False), on_cuda)),
        cpu_bf16=not on_cuda and (cpu_bf16_is_faster() if cpu_bf16 == "probe" else bool(cpu_bf16)),
    )
