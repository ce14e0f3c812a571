"""Figures (matplotlib, Agg) of a :func:`~distill.results.tables.configurations` table: the methods
side by side per benchmark with the teacher marked, the paired differences seed by seed, and accuracy
against data fraction, student size and λ, one line per method, error bars = standard error; each only
where the sweep has the runs for it."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from distill.results.identity import group_key
from distill.results.labels import config_label, fmt_fraction, given, model_rank, series_label
from distill.results.runs import TEACHER_METRIC, Run
from distill.results.tables import PAIRED_KEYS, paired_seeds, runs_frame, sort_key, stat

Row = dict[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, axes: Any, used: int, path: Path) -> bool:
    """Blank the axes past the ``used`` ones, write ``fig`` to ``path`` and close it; True."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return True


def plot_by_benchmark(configs: pd.DataFrame, runs: list[Run], metric: str, path: Path) -> bool:
    """Bars per benchmark and training fraction, one per method (mean ± standard error), the
    teacher's accuracy marked; one panel per student. False when no panel has two methods."""
    panels: dict[Any, list[Row]] = defaultdict(list)
    for row in configs.to_dict("records"):
        if stat(row, metric) is not None:
            panels[row["model"]].append(row)
    panels = {k: v for k, v in panels.items() if len({r["method_label"] for r in v}) >= 2}
    if not panels:
        return False
    plt = _pyplot()
    teacher = runs_frame(runs).infer_objects().groupby("benchmark")[TEACHER_METRIC].mean().to_dict()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (model, members) in zip(axes.flat, sorted(panels.items(), key=lambda kv: (model_rank(kv[0]), str(kv[0])))):
        cells = sorted({(r["benchmark"], r["fraction"]) for r in members}, key=lambda c: (str(c[0]), sort_key(c[1])))
        labels = sorted({r["method_label"] for r in members})
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            stats = {(r["benchmark"], r["fraction"]): stat(r, metric) for r in members if r["method_label"] == label}
            xs = [c + (i - (len(labels) - 1) / 2) * width for c in range(len(cells))]
            ys = [stats[c][0] * 100 if c in stats else float("nan") for c in cells]
            errs = [(stats[c][1] or 0.0) * 100 if c in stats else 0.0 for c in cells]
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=label)
        marked = False
        for c, (benchmark, _) in enumerate(cells):
            value = teacher.get(benchmark)
            if given(value):
                ax.hlines(value * 100, c - 0.45, c + 0.45, colors="black", linestyles="dashed",
                          label=None if marked else "teacher")
                marked = True
        ax.set_xticks(range(len(cells)), [f"{b}\n{fmt_fraction(f)} of train" for b, f in cells], fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(str(model), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, axes, len(panels), path)


def plot_paired(pairs: pd.DataFrame, metric: str, path: Path) -> bool:
    """One panel per comparison: each cell's difference (method minus baseline, in points) seed by
    seed as dots and their mean ± standard error, a line at zero; a pair of different precisions
    (``mixed_precision``) is a hollow dot, left out of the mean. False when nothing pairs."""
    if pairs.empty:
        return False
    plt = _pyplot()
    panels = {name: sorted(rows.groupby(list(PAIRED_KEYS[1:]), dropna=False), key=lambda kv: tuple(map(sort_key, kv[0])))
              for name, rows in pairs.groupby("comparison", sort=False)}
    widest = max(len(cells) for cells in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * max(3.5, 1.4 * widest), 3.8), squeeze=False)
    for ax, (name, cells) in zip(axes.flat, panels.items()):
        labels, marked = [], False
        for x, (key, seeds) in enumerate(cells):
            cell = dict(zip(PAIRED_KEYS[1:], key))
            mixed = seeds["mixed_precision"]
            points = seeds.loc[~mixed, "difference"] * 100
            left_out = seeds.loc[mixed, "difference"] * 100
            ax.scatter([x - 0.15] * len(points), points, s=14, color="tab:gray", alpha=0.7, zorder=2,
                       label="one seed" if x == 0 else None)
            ax.scatter([x - 0.15] * len(left_out), left_out, s=14, facecolors="none", edgecolors="tab:gray", zorder=2,
                       label="left out: mixed precision" if len(left_out) and not marked else None)
            marked = marked or bool(len(left_out))
            if len(points):
                se = points.sem() if len(points) > 1 else 0.0
                ax.errorbar([x], [points.mean()], yerr=[se], fmt="o", color="tab:blue", capsize=4, zorder=3,
                            label="mean ± standard error" if x == 0 else None)
            variant = f"\n{cell['variant']}" if given(cell["variant"]) and cell["variant"] else ""
            labels.append(f"{cell['benchmark']}\n{fmt_fraction(cell['fraction'])} · {cell['model']}{variant}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(cells)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_ylabel(f"{metric} difference (points)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _save(fig, axes, len(panels), path)


def _lambda_x(row: Row) -> float | None:
    """The x of a λ sweep: a step-by-step configuration's λ (None for the rest, and for the official α form)."""
    return None if row["method"] != "step_by_step" or given(row["alpha"]) else row["rationale_weight"]


def _plot_panels(rows: list[Row], metric: str, panel_keys: tuple[str, ...], x_of: Callable[[Row], Any], xlabel: str,
                 path: Path, logx: bool = False, xticks: Callable[[Any, list[Row]], None] | None = None) -> bool:
    """One subplot per panel, one line per method; returns False when no panel has 2+ x values."""
    panels: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if stat(row, metric) is not None and x_of(row) is not None:
            panels[tuple(row[k] for k in panel_keys)].append(row)
    panels = {k: v for k, v in panels.items() if len({x_of(r) for r in v}) >= 2}
    if not panels:
        return False
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 4)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)), squeeze=False)
    for ax, (panel, members) in zip(axes.flat, sorted(panels.items(), key=lambda kv: tuple(map(str, kv[0])))):
        steps = [r for r in members if r["method"] == "step_by_step"]
        lambdas_vary = len({(r["rationale_weight"], r["alpha"]) for r in steps}) > 1
        lrs_vary = len({r["lr"] for r in members}) > 1
        series: dict[str, list[Row]] = defaultdict(list)
        for r in members:
            series[series_label(r, lambdas_vary, lrs_vary) if x_of is not _lambda_x else r["method_label"]].append(r)
        for label, points in sorted(series.items()):
            points.sort(key=x_of)
            stats = [stat(r, metric) for r in points]
            ax.errorbar([x_of(r) for r in points], [s[0] * 100 for s in stats], yerr=[(s[1] or 0.0) * 100 for s in stats],
                        marker="o", capsize=3, label=label)
        if logx:
            ax.set_xscale("log")
        if xticks:
            xticks(ax, members)
        ax.set_title(" · ".join(str(p) for p in panel), fontsize=10)
        ax.set(xlabel=xlabel, ylabel=f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, axes, n, path)


def plot_learning_curves(runs: list[Run], path: Path) -> bool:
    """Validation accuracy against step, one panel per cell where two or more methods have curves: each
    seed a thin line, each method's mean over the seeds still training a thick one (an early-stopped seed
    leaves the mean). Shows whether a method starts sooner or ends higher. False when no cell has them."""
    cells: dict[tuple, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.ok and len(run.curve) >= 2:
            key = group_key(run.config)
            cell = (str(key["benchmark"]), str(key["model"]), fmt_fraction(key["fraction"]),
                    *([f"lr {key['lr']:g}"] if key["lr"] is not None else []))
            cells[cell][config_label(key) + (" (shared input)" if key["shared_input"] else "")].append(run)
    cells = {cell: methods for cell, methods in cells.items() if len(methods) >= 2}
    if not cells:
        return False
    plt = _pyplot()
    cols = min(len(cells), 4)
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax, (cell, methods) in zip(axes.flat, sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0])))):
        for color, (label, members) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], sorted(methods.items())):
            by_step: dict[int, list[float]] = defaultdict(list)
            for run in members:
                steps, accs = zip(*run.curve)
                ax.plot(steps, [a * 100 for a in accs], color=color, alpha=0.3, linewidth=0.8)
                for step, acc in run.curve:
                    by_step[step].append(acc)
            steps = sorted(by_step)
            ax.plot(steps, [100 * sum(by_step[s]) / len(by_step[s]) for s in steps], color=color, linewidth=2,
                    label=f"{label} ({len(members)} seeds)")
        ax.set_title(" · ".join(cell), fontsize=10)
        ax.set(xlabel="optimizer step", ylabel="val/acc (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, axes, len(cells), path)


def write_plots(configs: pd.DataFrame, runs: list[Run], metric: str, out: Path) -> list[Path]:
    """Every figure the sweep has the axes for, under ``out``; returns their paths."""
    rows = configs.to_dict("records")
    sizes_known = all(given(r["num_parameters"]) and r["num_parameters"] for r in rows)

    def fraction_ticks(ax: Any, members: list[Row]) -> None:
        fractions = sorted({float(r["fraction"]) for r in members})
        ax.set_xticks(fractions, [fmt_fraction(f) for f in fractions])
        ax.minorticks_off()

    def size_x(row: Row) -> float:
        return float(row["num_parameters"]) if sizes_known else float(model_rank(row["model"]))

    def size_ticks(ax: Any, members: list[Row]) -> None:
        ticks = sorted({(size_x(r), r["model"]) for r in members})
        ax.set_xticks([t[0] for t in ticks], [f"{t[1]}" + (f"\n{t[0] / 1e6:.0f}M" if sizes_known else "") for t in ticks],
                      fontsize=7)
        ax.minorticks_off()

    figures: dict[str, Callable[[Path], bool]] = {
        "accuracy_by_benchmark.png": lambda path: plot_by_benchmark(configs, runs, metric, path),
        "paired_differences.png": lambda path: plot_paired(paired_seeds(runs, metric), metric, path),
        "learning_curves.png": lambda path: plot_learning_curves(runs, path),
        "accuracy_vs_fraction.png": lambda path: _plot_panels(
            rows, metric, ("benchmark", "model"), lambda r: float(r["fraction"]), "training data used", path,
            logx=True, xticks=fraction_ticks),
        "accuracy_vs_model_size.png": lambda path: _plot_panels(
            rows, metric, ("benchmark", "fraction"), size_x, "student size (parameters)" if sizes_known else "student",
            path, logx=sizes_known, xticks=size_ticks),
        "accuracy_vs_lambda.png": lambda path: _plot_panels(
            rows, metric, ("benchmark", "model", "fraction"), _lambda_x, "λ (rationale loss weight)", path),
    }
    return [out / name for name, draw in figures.items() if draw(out / name)]
