"""The speed levers of a run (``conf/speed/``), each ``auto`` settled once for the device it runs on
(:func:`resolve_speed`), and the timed CPU probes behind ``cpu_bf16`` and ``fp32_generation``.
What each lever does and what it measured: the README's Speed table."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from distill.utils.runtime import cache_home

log = logging.getLogger(__name__)

__all__ = ["Speed", "PLAIN", "resolve_speed", "cpu_bf16_is_faster", "cpu_bf16_generation_is_faster"]


@dataclass(frozen=True)
class Speed:
    fused_optimizer: bool = False
    target_only_logits: bool = False
    stack_tasks: bool = False
    pad_to_multiple_of: int = 1
    pin_memory: bool = False
    cpu_bf16: bool = False
    fp32_generation: bool = False

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


def _machine_key(margin: float, probe: str = "matmul") -> str:
    """What a probe's answer depends on: the CPU (model and flags), torch's build and kernels, the probe."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        cpu = platform.processor()
    parts = [platform.machine(), cpu, torch.__version__, torch.backends.cpu.get_cpu_capability(), str(margin)]
    if probe != "matmul":  # the matmul probe's key is the one its cache files were written with
        parts.append(probe)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _time_matmuls() -> tuple[float, float]:
    """Median seconds of one 128x512 @ 512x512 matmul in fp32 and in bf16, timed alternately."""
    a32, b32 = torch.randn(128, 512), torch.randn(512, 512)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    torch.mm(a32, b32), torch.mm(a16, b16)
    for _ in range(5):
        for name, (a, b) in (("fp32", (a32, b32)), ("bf16", (a16, b16))):
            started = time.perf_counter()
            torch.mm(a, b)
            times[name].append(time.perf_counter() - started)
    return statistics.median(times["fp32"]), statistics.median(times["bf16"])


def _time_decode_steps(rows: int = 8, width: int = 512, steps: int = 8) -> tuple[float, float]:
    """Median seconds of ``steps`` decode-shaped products (``rows`` x ``width`` @ an fp32 weight of
    ``width`` x ``4 * width``, as a student's feed-forward layer sees one new token per row) in fp32,
    and under bf16 autocast as generation runs it (:func:`distill.utils.precision.generation_autocast`:
    the weight cast once per call, then bf16 products), timed alternately."""
    weight = torch.nn.Parameter(torch.randn(4 * width, width))
    x = torch.randn(rows, width)

    def fp32() -> None:
        for _ in range(steps):
            torch.nn.functional.linear(x, weight)

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=True):
            for _ in range(steps):
                torch.nn.functional.linear(x, weight)

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.no_grad():
        fp32(), bf16()
        for _ in range(7):
            for name, work in (("fp32", fp32), ("bf16", bf16)):
                started = time.perf_counter()
                work()
                times[name].append(time.perf_counter() - started)
    return statistics.median(times["fp32"]), statistics.median(times["bf16"])


def _settled_probe(file_name: str, what: str, key: str, timer: Callable[[], tuple[float, float]], margin: float) -> bool:
    """Whether bf16 beats fp32 by ``margin`` in ``timer``'s work: timed once per machine (``key``)
    and kept in ``<cache_home>/<file_name>``, so every process of a machine decides alike."""
    path = cache_home() / file_name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError as error:  # a read-only home still runs, deciding per process
        log.warning("speed: cannot keep the %s under %s (%s): timing it in this process", what, path, error)
        fp32, bf16 = timer()
        return bf16 * margin < fp32
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the ranks of a first DDP run wait for one probe
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                log.info("speed: %s settled for this machine in %s: bf16 %s", what, path,
                         "faster" if saved["bf16_faster"] else "not faster")
                return bool(saved["bf16_faster"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        fp32, bf16 = timer()
        faster = bf16 * margin < fp32
        log.info("speed: %s: fp32 %.3f ms, bf16 %.3f ms: bf16 %s; settled in %s",
                 what, fp32 * 1e3, bf16 * 1e3, "faster" if faster else "not faster", path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "bf16_faster": faster, "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3,
                                   "torch": torch.__version__}, indent=2) + "\n")
        os.replace(tmp, path)
        return faster


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster(margin: float = 1.5) -> bool:
    """Whether a bf16 matmul on this CPU beats fp32 by ``margin`` (a 128x512 @ 512x512 product, the
    shape of training): timed (instruction-set flags do not say how fast a build's kernels are)
    once per machine and torch build, then read back from ``<cache_home>/cpu_bf16_probe.json``, so
    every process of a machine decides alike whatever the load. Delete the file to time again;
    ``speed.cpu_bf16=true|false`` overrides it."""
    return _settled_probe("cpu_bf16_probe.json", "cpu bf16 probe", _machine_key(margin), _time_matmuls, margin)


@functools.lru_cache(maxsize=1)
def cpu_bf16_generation_is_faster(margin: float = 1.0) -> bool:
    """Whether generation's decode-shaped work (a few rows per matmul, :func:`_time_decode_steps`)
    runs faster under bf16 autocast than in fp32 on this CPU: a training-shaped probe does not
    say (casting the weights and small-row bf16 kernels can cost more than they give). Timed once
    per machine and torch build, kept in ``<cache_home>/cpu_generation_probe.json``; delete it to
    time again; ``speed.fp32_generation=true|false`` overrides it."""
    return _settled_probe("cpu_generation_probe.json", "cpu generation probe", _machine_key(margin, "decode"),
                          _time_decode_steps, margin)


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def resolve_speed(cfg: Mapping[str, Any] | None, on_cuda: bool) -> Speed:
    """``conf/speed/*.yaml`` with every ``auto`` settled for a run on CUDA (``on_cuda``) or CPU."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(Speed.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown speed settings {sorted(unknown)}; known: {sorted(Speed.__dataclass_fields__)}")
    cpu_bf16 = _auto(cfg.get("cpu_bf16", False), "probe")
    fp32_generation = _auto(cfg.get("fp32_generation", False), "probe")
    return Speed(
        fused_optimizer=bool(cfg.get("fused_optimizer", False)),
        target_only_logits=bool(cfg.get("target_only_logits", False)),
        stack_tasks=bool(_auto(cfg.get("stack_tasks", False), on_cuda)),
        pad_to_multiple_of=int(_auto(cfg.get("pad_to_multiple_of", 1), 8 if on_cuda else 1)),
        pin_memory=bool(_auto(cfg.get("pin_memory", False), on_cuda)),
        cpu_bf16=not on_cuda and (cpu_bf16_is_faster() if cpu_bf16 == "probe" else bool(cpu_bf16)),
        fp32_generation=(not on_cuda and not cpu_bf16_generation_is_faster()) if fp32_generation == "probe"
        else bool(fp32_generation),
    )
