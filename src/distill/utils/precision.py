"""The precision a student trained and was tested in (Lightning's string: ``32-true``, ``bf16-mixed``, ...),
recorded in ``results.json``, checkpoints and exports so that ``eval.py``, ``distill.predict`` and
``distill.export`` decode in it (an older checkpoint may name another one for generation);
:func:`generation_autocast` is the context generation runs in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DEFAULT_PRECISION = "32-true"
#: Lightning's precision names and their short forms
_ALIASES = {"32": "32-true", "32-true": "32-true", "64": "64-true", "64-true": "64-true",
            "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "16": "16-mixed", "16-mixed": "16-mixed",
            "bf16-true": "bf16-true", "16-true": "16-true"}
PRECISIONS = tuple(sorted(set(_ALIASES.values())))
_MIXED = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def normalize(precision: str | int | None) -> str:
    """Lightning's full name for ``precision`` (``bf16`` -> ``bf16-mixed``); None: ``32-true``."""
    if precision is None:
        return DEFAULT_PRECISION
    name = str(precision)
    if name not in _ALIASES:
        raise ValueError(f"precision {name!r}: expected one of {PRECISIONS}")
    return _ALIASES[name]


@contextlib.contextmanager
def generation_autocast(precision: str | None, device_type: str = "cpu") -> Iterator[None]:
    """The context generation runs in for ``precision``, inside or outside a Lightning step:
    autocast to the mixed dtype with its weight cache on (each weight is cast once per call, not
    once per decoded token; the same values as uncached autocast), or autocast off, so ``32-true``
    generation runs in fp32 even inside a bf16-mixed trainer's step."""
    dtype = _MIXED.get(normalize(precision))
    if dtype is None:
        with torch.autocast(device_type, enabled=False):
            yield
        return
    with torch.autocast(device_type, dtype=dtype, cache_enabled=True):
        yield
