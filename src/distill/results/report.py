"""``results.md``: the paper-style tables, the paired differences with their tests, the cells pooled,
every configuration and every run left out, as Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from distill.results.labels import fmt_fraction, given, model_rank, series_label
from distill.results.runs import METRICS, NOT_STARTED, UNFINISHED, Run
from distill.results.stats import pooled
from distill.results.tables import sort_key, stat


def fmt_stat(value: tuple[float, float | None, int] | None, scale: float = 100.0) -> str:
    """``mean ± se`` in percent, ``mean (n=1)`` for one seed, ``-`` for none."""
    if value is None:
        return "-"
    mean, se, n = value
    if se is None:
        return f"{mean * scale:.2f} (n={n})"
    return f"{mean * scale:.2f} ± {se * scale:.2f}"


def _percent(value: Any, se: Any = None, n: Any = None) -> str:
    if not given(value):
        return "-"
    if se is None:
        return f"{value * 100:.2f}"
    if pd.isna(se):
        return f"{value * 100:+.2f} (n={int(n)})"
    return f"{value * 100:+.2f} ± {se * 100:.2f}"


def _number(value: Any) -> str:
    return f"{value:g}" if given(value) else ""


def pipe_table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A compact Markdown pipe table; ``align`` has one ``l`` or ``r`` per column."""
    return ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align),
            *("| " + " | ".join(row) + " |" for row in rows)]


def paper_tables(configs: pd.DataFrame, metric: str) -> list[str]:
    """Per (benchmark, student): methods x data fractions, mean ± SE over seeds, in percent."""
    lines: list[str] = []
    panels = [panel for _, panel in configs.groupby(["benchmark", "model"], dropna=False, sort=False)]
    for panel in sorted(panels, key=lambda p: (str(p["benchmark"].iloc[0]), model_rank(p["model"].iloc[0]), str(p["model"].iloc[0]))):
        fractions = sorted(set(panel["fraction"]), key=sort_key)
        steps = panel[panel["method"] == "step_by_step"]
        lambdas_vary = len(set(zip(steps["rationale_weight"], steps["alpha"]))) > 1
        lrs_vary = len(set(panel["lr"])) > 1
        cells = panel.assign(
            series=[series_label(row, lambdas_vary, lrs_vary) for row in panel.to_dict("records")],
            cell=[fmt_stat(stat(row, metric)) for _, row in panel.iterrows()])
        # a later configuration with the same name and fraction wins the cell
        table = cells.pivot_table(index="series", columns="fraction", values="cell", aggfunc="last")
        table = table.reindex(index=sorted(set(cells["series"])), columns=fractions).fillna("")
        lines += [f"### {panel['benchmark'].iloc[0]} · {panel['model'].iloc[0]} · {metric} (%)", ""]
        lines += pipe_table(["method", *map(fmt_fraction, fractions)], "l" + "r" * len(fractions),
                            ([label, *row] for label, row in zip(table.index, table.values.tolist())))
        lines.append("")
    return lines


def paired_table(paired: pd.DataFrame, metric: str) -> list[str]:
    """The paired differences as a Markdown section (empty when nothing pairs)."""
    if paired.empty:
        return []
    table = paired.assign(**{
        "fraction": paired["fraction"].map(fmt_fraction),
        # the method's loss weight: α=... for the official form, else λ
        "λ": [f"α={a:g}" if given(a) else _number(w) for w, a in zip(paired["rationale_weight"], paired["alpha"])],
        "baseline (%)": paired["baseline"].map(_percent),
        "method (%)": paired["method"].map(_percent),
        "difference (points)": [_percent(d, se, n) for d, se, n in zip(paired["difference"], paired["difference_se"], paired["n"])],
        "95% CI": [f"[{lo * 100:+.1f}, {hi * 100:+.1f}]" if pd.notna(lo) else "-"
                   for lo, hi in zip(paired["ci_low"], paired["ci_high"])],
        "p": paired["p_value"].map(lambda p: "-" if pd.isna(p) else f"{p:.3f}"),
        "detectable": paired["detectable"].map(lambda d: "-" if pd.isna(d) else f"{d * 100:.1f}"),
        "steps (best)": [f"{_number(round(s_b))} ({_number(round(b_b))}) / {_number(round(s))} ({_number(round(b))})"
                         if pd.notna(s_b) and pd.notna(b_b) and pd.notna(s) and pd.notna(b) else "-"
                         for s_b, b_b, s, b in zip(paired["steps_base"], paired["best_step_base"], paired["steps"],
                                                   paired["best_step"])],
        "layout": paired["shared_input"].map(lambda shared: "shared input" if shared else "paper"),
        "teacher (%)": paired["teacher"].map(_percent),
    }).rename(columns={"max_steps": "cap"})
    columns = ["comparison", "benchmark", "model", "fraction", "cap", "λ", "seeds", "baseline (%)", "method (%)",
               "difference (points)", "95% CI", "p", "detectable", "steps (best)", "teacher (%)"]
    if paired["shared_input"].astype(bool).any():
        columns.insert(columns.index("λ"), "layout")
    if paired["variant"].astype(bool).any():
        columns.insert(columns.index("λ"), "variant")
    if paired["excluded"].astype(bool).any():
        columns.append("excluded")
    return [f"### Paired differences · {metric}", "",
            "Each method minus its baseline on the same cell and seed (seeds both ran), mean ± standard error "
            "over seeds, in percentage points, with the paired t-test's 95% interval and p-value; `detectable`: the "
            "smallest difference these seeds detect with 80% power at their spread; `steps (best)`: the steps the "
            "baseline / the method trained (and of its best-validation checkpoint), means over seeds; the teacher's "
            "own accuracy on the same test examples beside it.", "",
            table[columns].to_markdown(index=False, disable_numparse=True), "",
            "A pair whose two runs trained in different precisions is left out of the paired statistics "
            "(`excluded`: the method's precision, then the baseline's).", "", *pooled_table(paired)]


def pooled_table(paired: pd.DataFrame) -> list[str]:
    """Per comparison, model and layout with two or more cells: the cells pooled (:func:`~distill.results.stats.pooled`)."""
    rows = []
    for (name, model, shared), part in paired.groupby(["comparison", "model", "shared_input"], sort=False):
        found = pooled(part["difference"], part["difference_se"])
        if found["k"] < 2:
            continue
        rows.append([name, str(model), "shared input" if shared else "paper", str(found["k"]),
                     f"{found['estimate'] * 100:+.2f} ± {found['se'] * 100:.2f}",
                     f"[{found['ci_low'] * 100:+.1f}, {found['ci_high'] * 100:+.1f}]", f"{found['p']:.3f}",
                     f"{found['q']:.1f} (p {found['q_p']:.3f})", f"{found['i2'] * 100:.0f}%",
                     f"{found['re_estimate'] * 100:+.2f} ± {found['re_se'] * 100:.2f}",
                     f"[{found['re_ci_low'] * 100:+.1f}, {found['re_ci_high'] * 100:+.1f}]"])
    if not rows:
        return []
    return ["### Pooled across cells", "",
            "The cells' mean differences (points) weighted by inverse variance: fixed effect with its 95% interval "
            "and p-value; Cochran's Q and I² say how much the cells disagree beyond their noise; where they do, "
            "the random-effects (DerSimonian-Laird) estimate is the one to quote.", "",
            *pipe_table(["comparison", "model", "layout", "cells", "fixed effect", "95% CI", "p", "Q", "I²",
                         "random effects", "95% CI"], "lllrrrrrrrr", rows), ""]


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.1f}" if given(seconds) else ""


def _compute(runs: Sequence[Run]) -> str:
    """`` Training: 3.2 h in all (the fit wall time of those runs).`` where any of ``runs`` recorded it."""
    seconds = [r.train_seconds for r in runs if r.train_seconds is not None]
    return f" Training: {sum(seconds) / 3600:.1f} h in all (the fit wall time of those runs)." if seconds else ""


def _display(text: str) -> str:
    """Paths under the working directory shown relative to it (reports get committed)."""
    return text.replace(str(Path.cwd()) + "/", "")


def left_out(failed: Sequence[Run]) -> str:
    """``2 failed, 0 diverged`` and, where there are any, ``1 unfinished, 3 not started``."""
    counts = Counter(r.status for r in failed)
    statuses = ["failed", "diverged"] + [s for s in (UNFINISHED, NOT_STARTED) if counts[s]]
    return ", ".join(f"{counts[s]} {s}" for s in statuses)


def markdown_report(runs: list[Run], configs: pd.DataFrame, metric: str, sources: Sequence[str],
                    paired: pd.DataFrame | None = None) -> str:
    """``results.md``: the paper tables, the paired differences, every configuration, every run left out."""
    ok = [r for r in runs if r.ok]
    failed = [r for r in runs if not r.ok]
    lines = ["# Results", "",
             f"Sources: {', '.join(f'`{_display(str(s))}`' for s in sources)}. {len(ok)} successful run(s), "
             f"{left_out(failed)} (left out of every mean).{_compute(ok)}",
             f"Cells: mean ± standard error over seeds of `{metric}` in percent; `(n=1)` where one seed ran.", "",
             *paper_tables(configs, metric)]
    if paired is not None:
        lines += paired_table(paired, metric)
    rows = [[str(k["benchmark"]), str(k["model"]), k["method_label"], str(k["label_source"]), fmt_fraction(k["fraction"]),
             _number(k["rationale_weight"]) if k["method"] == "step_by_step" else "", _number(k["alpha"]),
             str(k["max_steps"]), _number(k["lr"]), k["seeds"], *(fmt_stat(stat(k, m)) for m in METRICS),
             _number(round(k["steps"])) if pd.notna(k["steps"]) else "",
             _number(round(k["best_step"])) if pd.notna(k["best_step"]) else "", k["precision"], _minutes(k["train_seconds"])]
            for k in configs.to_dict("records")]
    lines += ["### All configurations", "",
              "`cap`: the step budget; `trained` and `best`: the steps the seeds trained (early stopping ends a run "
              "before its cap) and of their best validation, means; `precision`: what the seeds trained in; "
              "`train min`: the mean wall time of a seed's training, in minutes, on whatever machine ran it.", "",
              *pipe_table(["benchmark", "model", "method", "labels", "fraction", "λ", "α", "cap", "lr", "seeds", *METRICS,
                           "trained", "best", "precision", "train min"], "llllrrrrrl" + "r" * len(METRICS) + "rrlr", rows), ""]
    failed = [r for r in failed if r.status != NOT_STARTED]  # counted above: a sweep still running has many
    if failed:
        lines += ["### Failed and diverged runs", "",
                  *pipe_table(["run", "status", "job", "reason"], "llll",
                              ([f"`{_display(r.source)}`", r.status, r.job.replace("|", "/"),
                                _display(r.reason).replace("|", "/")] for r in failed)), ""]
    return "\n".join(lines)
