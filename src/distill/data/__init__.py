"""Data layer: splits with teacher rationales, tokenization, global-batch sampling, summary.
``DistillDataModule`` is imported lazily: ``python -m distill.data`` and the splits pay no Lightning import."""

from __future__ import annotations

from typing import Any

__all__ = ["DistillDataModule"]


def __getattr__(name: str) -> Any:
    if name == "DistillDataModule":
        from distill.data.datamodule import DistillDataModule

        return DistillDataModule
    raise AttributeError(f"module 'distill.data' has no attribute {name!r}")
