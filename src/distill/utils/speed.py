"""The speed levers of a run (``conf/speed/``), each ``auto`` settled once for the device it runs on
(:func:`resolve_speed`): ``cpu_bf16`` by the CPU's features (:func:`native_bf16`), never by a timing.
What each lever does and what it measured: docs/speed.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

#: levers since removed (docs/speed.md), still in the hyperparameters of older checkpoints
REMOVED = ("stack_tasks", "pad_to_multiple_of", "pin_memory", "fp32_generation")


@dataclass(frozen=True)
class Speed:
    fused_optimizer: bool = False
    target_only_logits: bool = False
    cpu_bf16: bool = False
    eager_attention: bool = False

    @classmethod
    def of(cls, levers: Mapping[str, Any]) -> Speed:
        """The levers :meth:`as_dict` gave (a module's hyperparameters), removed ones left out."""
        return cls(**{name: value for name, value in levers.items() if name not in REMOVED})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The levers that are on, in words (``plain`` when none is)."""
        return ", ".join(name for name, on in self.as_dict().items() if on) or "plain"


#: every lever off
PLAIN = Speed()


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def native_bf16() -> str | None:
    """The CPU's native bf16 matmul instructions, ``"AMX"`` or ``"AVX512-BF16"``, or None (AVX2 and
    older, where bf16 is emulated and runs many times slower than fp32). Read from the CPU's
    features (``/proc/cpuinfo``, else torch's own check), never timed: the same kind of CPU always
    answers the same, whatever its load."""
    flags = _cpu_flags()
    if not flags:  # no /proc/cpuinfo: torch's own checks
        checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        flags = {flag for flag, check in checks.items() if getattr(torch.cpu, check, lambda: False)()}
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def resolve_speed(cfg: Mapping[str, Any] | None, on_cuda: bool) -> Speed:
    """``conf/speed/*.yaml`` with every ``auto`` settled for a run on CUDA (``on_cuda``) or CPU."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(Speed.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown speed settings {sorted(unknown)}; known: {sorted(Speed.__dataclass_fields__)}")
    native = None if on_cuda else native_bf16()
    return Speed(
        fused_optimizer=bool(cfg.get("fused_optimizer", False)),
        target_only_logits=bool(cfg.get("target_only_logits", False)),
        cpu_bf16=not on_cuda and bool(_auto(cfg.get("cpu_bf16", False), native is not None)),
        # auto: on a CPU, where torch's fused attention backward is the slower kernel at these lengths
        eager_attention=bool(_auto(cfg.get("eager_attention", False), not on_cuda)),
    )
