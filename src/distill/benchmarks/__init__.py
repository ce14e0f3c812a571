"""Benchmarks: one module per task, plus a registry by name. Every class is importable from here for Hydra's
``_target_`` (``distill.benchmarks.CQA``); :func:`get_benchmark` builds one by name (``get_benchmark("cqa")``,
``get_benchmark("jsonl", name="mytask", label_field="answer", input_fields=["question"])``), importing a module
not imported here (``arith``) when first asked for: a new benchmark needs only a line in :data:`REGISTRY`."""

from __future__ import annotations

import importlib
from typing import Any

from distill.benchmarks.anli1 import ANLI1
from distill.benchmarks.base import Benchmark, DataError, Example, Exemplar, ParsedCompletion
from distill.benchmarks.cqa import CQA
from distill.benchmarks.esnli import ESNLI
from distill.benchmarks.jsonl import JsonlBenchmark
from distill.benchmarks.nli import NLIBenchmark
from distill.benchmarks.svamp import SVAMP

__all__ = ["ANLI1", "CQA", "ESNLI", "SVAMP", "Benchmark", "DataError", "Example", "Exemplar", "JsonlBenchmark",
           "NLIBenchmark", "ParsedCompletion", "REGISTRY", "benchmark_class", "build", "get_benchmark"]

#: benchmark name -> module that defines it (the class is the Benchmark subclass with that name)
REGISTRY: dict[str, str] = {
    "esnli": "distill.benchmarks.esnli",
    "anli1": "distill.benchmarks.anli1",
    "cqa": "distill.benchmarks.cqa",
    "svamp": "distill.benchmarks.svamp",
    "jsonl": "distill.benchmarks.jsonl",
    "arith": "distill.benchmarks.arith",
}


def benchmark_class(name: str) -> type[Benchmark]:
    """The class registered under ``name``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module = importlib.import_module(REGISTRY[name])
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Benchmark) and value.__module__ == module.__name__
                and getattr(value, "name", None) == name):
            return value
    raise KeyError(f"module {REGISTRY[name]} defines no Benchmark subclass with name = {name!r}")


def build(name: str, **kwargs: Any) -> Benchmark:
    """Hydra-friendly factory, so a config names its benchmark: ``{_target_:
    distill.benchmarks.build, name: cqa}`` (and ``${data.benchmark.name}`` reads ``cqa``).
    The generic jsonl benchmark is configured through its class, whose ``name`` is the task's."""
    if name == "jsonl":
        raise ValueError("configure a jsonl task with _target_: distill.benchmarks.JsonlBenchmark and name: <task>")
    return get_benchmark(name, **kwargs)


def get_benchmark(name: str, /, **kwargs: Any) -> Benchmark:
    """Build the benchmark registered under ``name`` with constructor ``kwargs`` (the generic
    ``jsonl`` benchmark takes its task's own ``name=`` among them)."""
    return benchmark_class(name)(**kwargs)
