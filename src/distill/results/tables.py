"""Tables on pandas: the successful runs as a frame, pooled into configurations (runs equal on
all but the seed: n, mean and standard error over seeds per metric), the paired differences
(a method minus its baseline on the same cell, seed by seed), and their CSV forms (``results.csv``,
``paired.csv``, ``runs.csv``); :mod:`distill.results.report` writes them as Markdown."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from distill.results.identity import DEFAULTS, GROUP_KEYS, VARIANT_KEYS, group_key
from distill.results.labels import config_label, variant_label
from distill.results.runs import METRICS, TEACHER_METRIC, Run
from distill.results.stats import paired_t

#: what a difference is paired within: the same cell, seed by seed
CELL_KEYS = ("benchmark", "model", "fraction", "max_steps", "global_batch_size", "lr")
#: (comparison, baseline, method): the differences results.md reports, method minus baseline
COMPARISONS = (
    ("step-by-step − standard finetuning", {"method": "standard", "label_source": "gold"},
     {"method": "step_by_step", "label_source": "gold"}),
    ("step-by-step − standard distillation", {"method": "standard", "label_source": "teacher"},
     {"method": "step_by_step", "label_source": "teacher"}),
    ("shared input − paper layout (step-by-step)", {"method": "step_by_step", "label_source": "gold", "shared_input": False},
     {"method": "step_by_step", "label_source": "gold", "shared_input": True}),
)


# ---------------------------------------------------------------------------- frames
def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per successful run: its group keys (:func:`~distill.results.identity.group_key`), seed,
    parameter count, precision, training seconds, steps trained and the step of its best validation,
    :data:`METRICS` and the teacher's accuracy, as recorded (object columns: None stays None)."""
    rows = [{**group_key(r.config), "seed": r.config.get("seed"), "num_parameters": r.num_parameters,
             "precision": r.precision, "train_seconds": r.train_seconds, "steps": r.steps, "best_step": r.best_step,
             **{m: r.metrics.get(m) for m in (*METRICS, TEACHER_METRIC)}} for r in runs if r.ok]
    columns = [*GROUP_KEYS, "seed", "num_parameters", "precision", "train_seconds", "steps", "best_step", *METRICS,
               TEACHER_METRIC]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _precisions(frame: pd.DataFrame) -> str:
    """The precisions a configuration's seeds trained in: ``bf16-mixed``, or ``32-true (1 2) bf16-mixed (0)``
    (by name) where seeds differ (runs of one sweep on CPUs of different kinds); blank where none recorded it."""
    by_precision: dict[str, list[Any]] = {}
    for precision, seed in zip(frame["precision"], frame["seed"]):
        if precision is not None:
            by_precision.setdefault(str(precision), []).append(seed)
    if len(by_precision) <= 1:
        return next(iter(by_precision), "")
    return " ".join(f"{p} ({' '.join(str(s) for s in sorted(seeds, key=sort_key))})"
                    for p, seeds in sorted(by_precision.items()))


def _finite(values: pd.Series) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values: pd.Series) -> float:
    finite = _finite(values)
    return statistics.fmean(finite) if finite else math.nan


def _se(values: pd.Series) -> float:
    """Standard error of the mean: sample standard deviation / sqrt(n); NaN for n < 2."""
    finite = _finite(values)
    return statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) >= 2 else math.nan


def _median_count(counts: pd.Series) -> float:
    known = [c for c in counts if c]
    return int(statistics.median(known)) if known else math.nan


def configurations(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per configuration (the long table, ``results.csv``): :data:`GROUP_KEYS` as recorded,
    ``method_label``, ``precision`` (:func:`_precisions`), ``seeds``, ``num_parameters`` (median),
    ``train_seconds``, ``steps`` (trained) and ``best_step`` (means), and per metric ``<m>_n``, ``<m>_mean``, ``<m>_se`` over the seeds with a
    finite value; sorted by the group keys (None first)."""
    frame = runs_frame(runs)
    # grouped by a group number: the key columns keep their recorded values (groupby's index would coerce them)
    frame["group"] = frame.groupby(list(GROUP_KEYS), dropna=False, sort=False).ngroup()
    stats = frame.groupby("group").agg(
        seeds=("seed", lambda seeds: " ".join(str(s) for s in sorted(set(seeds), key=str))),
        num_parameters=("num_parameters", _median_count),
        train_seconds=("train_seconds", _mean),
        steps=("steps", _mean),
        best_step=("best_step", _mean),
        **{name: spec for m in METRICS for name, spec in
           ((f"{m}_n", (m, lambda v: len(_finite(v)))), (f"{m}_mean", (m, _mean)), (f"{m}_se", (m, _se)))},
    ).astype({"num_parameters": "Int64"})
    precisions = {group: _precisions(part) for group, part in frame.groupby("group")}
    stats.insert(0, "precision", [precisions[group] for group in stats.index])
    table = frame.drop_duplicates("group").set_index("group")[list(GROUP_KEYS)]
    table.insert(len(GROUP_KEYS), "method_label", [config_label(key) for key in table.to_dict("records")])
    table = table.join(stats).sort_values(list(GROUP_KEYS), na_position="first")
    return table.reset_index(drop=True)


def stat(row: Any, metric: str) -> tuple[float, float | None, int] | None:
    """``(mean, standard error or None, n)`` of ``metric`` in a :func:`configurations` row; None when no seed has it."""
    n = int(row[f"{metric}_n"])
    if not n:
        return None
    se = row[f"{metric}_se"]
    return row[f"{metric}_mean"], None if pd.isna(se) else se, n


def runs_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run, failed ones included (``runs.csv``): its identity and metrics as recorded."""
    def cell(value: Any) -> Any:
        return "nan" if isinstance(value, float) and math.isnan(value) else value  # a NaN is written, not blanked

    rows = [{"source": r.source, "status": r.status, "reason": r.reason, "job": r.job,
             **{k: cell(r.config.get(k)) for k in (*GROUP_KEYS, "seed")},
             **{m: cell(r.metrics.get(m)) for m in METRICS}, "num_parameters": r.num_parameters,
             "precision": r.precision, "train_seconds": r.train_seconds, "steps": r.steps, "best_step": r.best_step}
            for r in runs]
    return pd.DataFrame(rows, dtype=object)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV, None and NaN blank, rows ended by CRLF (as the csv module writes them)."""
    frame.to_csv(path, index=False, lineterminator="\r\n")


# ---------------------------------------------------------------------------- paired differences
def _select(frame: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``frame`` equal to ``selector`` on each of its keys."""
    return frame[frame[list(selector)].eq(pd.Series(selector)).all(axis=1)]


def paired_seeds(runs: Iterable[Run], metric: str) -> pd.DataFrame:
    """Per comparison (:data:`COMPARISONS`), cell (:data:`CELL_KEYS`) and seed both methods ran: the
    method's and the baseline's ``metric`` (``value``, ``value_base``), their ``difference``, the
    teacher's test accuracy, both runs' ``precision`` (``precision``, ``precision_base``) and
    ``mixed_precision``: both recorded and different (an unrecorded precision never counts as mixed);
    empty when nothing pairs."""
    frame = (runs_frame(runs).infer_objects().rename(columns={metric: "value", TEACHER_METRIC: "teacher"})
             [[*GROUP_KEYS, "seed", "value", "teacher", "precision", "steps", "best_step"]].dropna(subset=["value"]))
    tables = []
    for name, baseline, method in COMPARISONS:
        # the baseline makes the paper's choices; the method's own variants (λ, follow-up choices) are rows apart
        paper = {key: DEFAULTS[key] for key in VARIANT_KEYS if key not in baseline}
        pairs = _select(frame, {**paper, **baseline}).merge(_select(frame, method), on=[*CELL_KEYS, "seed"],
                                                            suffixes=("_base", ""))
        if pairs.empty:
            continue
        pairs["difference"] = pairs["value"] - pairs["value_base"]
        pairs["teacher"] = pairs["teacher"].fillna(pairs["teacher_base"])
        pairs["mixed_precision"] = (pairs["precision"].notna() & pairs["precision_base"].notna()
                                    & (pairs["precision"] != pairs["precision_base"])).astype(bool)
        pairs["variant"] = [variant_label(row) for row in pairs[["method", *VARIANT_KEYS]].to_dict("records")]
        pairs.insert(0, "comparison", name)
        tables.append(pairs)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


#: one row of paired.csv: a comparison on one cell, at one λ/α, layout and variant of the method
PAIRED_KEYS = ("comparison", *CELL_KEYS, "rationale_weight", "alpha", "shared_input", "variant")


def paired_differences(runs: Iterable[Run], metric: str) -> pd.DataFrame:
    """Per comparison and cell (:data:`PAIRED_KEYS`): the method minus its baseline seed by seed
    (:func:`paired_seeds`), mean and standard error over those seeds with the paired t-test's 95%
    interval, p-value and smallest detectable difference (:func:`~distill.results.stats.paired_t`), both
    means with their standard errors, the steps each trained and of its best checkpoint (means), and the
    teacher's test accuracy (``paired.csv``). A pair of different precisions is left out of every statistic
    (``n`` and ``seeds`` included) and named in ``excluded`` (``seed 1 (bf16-mixed vs 32-true)``:
    the method's precision, then the baseline's; empty when none is)."""
    pairs = paired_seeds(runs, metric)
    if pairs.empty:
        return pd.DataFrame()
    mixed = pairs["mixed_precision"]
    # a mixed pair's values are blanked, so each statistic (all NaN-skipping) leaves it out
    pairs.loc[mixed, ["difference", "value", "value_base", "teacher", "steps", "steps_base", "best_step",
                      "best_step_base"]] = math.nan
    pairs["kept_seed"] = pairs["seed"].astype(object).where(~mixed, None)
    pairs["excluded"] = [f"seed {seed} ({p} vs {p_base})" if m else ""
                         for seed, p, p_base, m in zip(pairs["seed"], pairs["precision"], pairs["precision_base"], mixed)]
    order = {name: i for i, (name, _, _) in enumerate(COMPARISONS)}
    table = (pairs.groupby(list(PAIRED_KEYS), dropna=False, sort=True)
             .agg(n=("difference", "count"), difference=("difference", "mean"), difference_se=("difference", "sem"),
                  baseline=("value_base", "mean"), baseline_se=("value_base", "sem"), method=("value", "mean"),
                  method_se=("value", "sem"), teacher=("teacher", "mean"),
                  steps_base=("steps_base", "mean"), steps=("steps", "mean"),
                  best_step_base=("best_step_base", "mean"), best_step=("best_step", "mean"),
                  seeds=("kept_seed", lambda seeds: " ".join(str(s) for s in sorted(seeds.dropna(), key=str))),
                  excluded=("excluded", lambda notes: "; ".join(n for n in notes if n)))
             .reset_index()
             .sort_values("comparison", key=lambda names: names.map(order), kind="stable", ignore_index=True))
    return table.join(paired_t(table["difference"], table["difference_se"], table["n"]))


def sort_key(value: Any) -> tuple:
    """None, then numbers in order, then anything else by its text."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0, str(value))
