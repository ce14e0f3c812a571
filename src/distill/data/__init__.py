"""Data layer: splits with teacher rationales, tokenization, global-batch sampling, summary.

``DistillDataModule`` is imported lazily so ``python -m distill.data`` and the splits and
benchmark code do not pay for importing Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DistillDataModule"]


def __getattr__(name: str) -> Any:
    if name == "DistillDataModule":
        from distill.data.datamodule import DistillDataModule

        return DistillDataModule
    raise AttributeError(f"module 'distill.data' has no attribute {name!r}")
