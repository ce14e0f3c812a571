"""Turn a sweep's runs into the paper's tables and plots (the results package does the work).

    python -m distill.aggregate logs/train/multiruns/2026-01-01_12-00-00 --out experiments/example
    python -m distill.aggregate my-entity/distill --out results/    # a W&B project (online)
    python -m distill.aggregate logs/grid --out results/ --keep-runs experiments/grid/runs   # and keep its small files

Writes ``results.md``, ``results.csv``, ``paired.csv``, ``runs.csv`` and the PNG plots under ``--out``
(experiments/README.md, "What the aggregator writes"); every run left out is listed with its reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.results.plots import write_plots
from distill.results.runs import METRICS, NOT_STARTED, AggregateError, Run, keep_runs, read_source
from distill.results.report import left_out, markdown_report
from distill.results.tables import configurations, paired_differences, runs_table, write_csv


def aggregate(sources: Sequence[str], out: Path, metric: str = "test/acc") -> dict[str, Any]:
    """Read every source, pool and write every output under ``out``; returns the ``runs``
    (:class:`~distill.results.runs.Run`), the ``groups`` (the configurations DataFrame), the ``plots``
    written and the ``failed`` runs."""
    runs: list[Run] = []
    for source in sources:
        runs.extend(read_source(source))
    if not runs:
        raise AggregateError(f"no runs found under {', '.join(sources)}")
    configs = configurations(runs)
    if configs.empty:
        reasons = "; ".join(f"{r.source}: {r.reason}" for r in runs[:10])
        raise AggregateError(f"none of the {len(runs)} run(s) succeeded: {reasons}")
    out.mkdir(parents=True, exist_ok=True)
    paired = paired_differences(runs, metric)
    (out / "results.md").write_text(markdown_report(runs, configs, metric, sources, paired))
    write_csv(configs, out / "results.csv")
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)
    write_csv(runs_table(runs), out / "runs.csv")
    plots = write_plots(configs, runs, metric, out)
    return {"runs": runs, "groups": configs, "plots": plots, "failed": [r for r in runs if not r.ok]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", metavar="DIR_OR_WANDB_PROJECT",
                        help="multirun directories (or run directories), or a W&B project 'entity/project'")
    parser.add_argument("--out", required=True, type=Path, help="where the tables and plots go")
    parser.add_argument("--metric", default="test/acc", choices=METRICS, help="the metric of tables and plots")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any run failed")
    parser.add_argument("--keep-runs", type=Path, metavar="DIR",
                        help="first copy each run's small files (results.json, .hydra/, its val curve) to DIR/<sweep>/")
    args = parser.parse_args(argv)
    if args.keep_runs:
        print(f"kept {keep_runs(args.sources, args.keep_runs)} run(s) under {args.keep_runs}")
    try:
        result = aggregate(args.sources, args.out, args.metric)
    except AggregateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ok = len(result["runs"]) - len(result["failed"])
    print(f"{ok} run(s) in {len(result['groups'])} configuration(s) -> {args.out}/results.md, results.csv, runs.csv"
          f" ({left_out(result['failed'])}: left out)")
    for plot in result["plots"]:
        print(f"plot: {plot}")
    for run in result["failed"]:
        if run.status != NOT_STARTED:  # counted above, and listed in runs.csv
            print(f"{run.status.upper()} {run.source} {run.job}: {run.reason}", file=sys.stderr)
    return 1 if args.strict and result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
