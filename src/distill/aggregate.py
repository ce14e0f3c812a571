"""Turn a sweep's runs into the paper's tables and plots.

    python -m distill.aggregate logs/train/multiruns/2026-01-01_12-00-00 --out experiments/example
    python -m distill.aggregate my-entity/distill --out results/    # a W&B project (online)
    python -m distill.aggregate logs/grid --out results/ --keep-runs experiments/grid/runs   # and keep its small files

Reads every run of one or more multirun directories (each run's ``results.json`` and
``.hydra/``) or of a W&B project, groups runs that differ only in their seed, and writes:

- ``results.md``: per benchmark and student, one row per method and one column per training-data
  fraction, ``mean ± standard error`` over seeds (the paper's layout); the paired differences
  (step-by-step minus its baseline, seed by seed, with the teacher's own test accuracy beside
  them); the long table; every run that failed;
- ``results.csv``: the long table (one row per configuration, with n, mean, standard error);
  ``paired.csv``: the paired differences; ``runs.csv``: one row per run, failed ones included;
- ``accuracy_by_benchmark.png``: the methods side by side per benchmark, the teacher marked;
  ``accuracy_vs_fraction.png``, ``accuracy_vs_model_size.png``, ``accuracy_vs_lambda.png``: one line
  per method, error bars = standard error (each only when the sweep varies that axis).

Nothing is dropped silently: a run whose ``status`` is not ``ok``, whose ``results.json`` is missing
or unreadable, or a job of the sweep that never made its directory, is listed with the reason.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: the configuration fields that identify a result; runs equal on all but ``seed`` are pooled
GROUP_KEYS = ("benchmark", "model", "method", "label_source", "fraction", "rationale_weight", "alpha",
              "max_steps", "global_batch_size", "lr", "shared_input", "rationales", "rationale_filter",
              "rationale_position")
#: the follow-up literature's choices a run can make (issue 19), beside the paper's method
VARIANT_KEYS = ("rationales", "rationale_filter", "rationale_position")
#: what runs from before a group key was recorded used: the paper's choices
GROUP_DEFAULTS = {"shared_input": False, "rationales": "first", "rationale_filter": "none",
                  "rationale_position": "before"}
METRICS = ("test/acc", "val/acc_best")
#: the teacher's own accuracy on a run's test examples (train.py records it where the teacher has them)
TEACHER_METRIC = "test/teacher_acc"
#: what a difference is paired within: the same cell, seed by seed
CELL_KEYS = ("benchmark", "model", "fraction", "max_steps", "global_batch_size", "lr")
#: (comparison, baseline, method): the differences results.md reports, method minus baseline
COMPARISONS = (
    ("step-by-step − standard finetuning", {"method": "standard", "label_source": "gold"},
     {"method": "step_by_step", "label_source": "gold", "shared_input": False}),
    ("step-by-step − standard distillation", {"method": "standard", "label_source": "teacher"},
     {"method": "step_by_step", "label_source": "teacher", "shared_input": False}),
    ("shared input − paper layout (step-by-step)", {"method": "step_by_step", "label_source": "gold", "shared_input": False},
     {"method": "step_by_step", "label_source": "gold", "shared_input": True}),
)
#: the paper's students in size order, for the model-size axis when parameter counts are unknown
MODEL_ORDER = ("tiny", "minilm", "t5_v1_1_small", "flan_t5_small", "t5_v1_1_base", "flan_t5_base",
               "t5_v1_1_large", "flan_t5_large", "t5_v1_1_xxl")


class AggregateError(RuntimeError):
    """Nothing usable to aggregate, or a source that cannot be read."""


@dataclass
class Run:
    """One run of a sweep, successful or not."""

    source: str  # run directory or W&B run path
    status: str  # "ok", or why it is not usable
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    num_parameters: int | None = None
    reason: str = ""
    job: str = ""  # the sweep's job number and overrides, where known

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------- reading runs
def _read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _job_label(run_dir: Path) -> tuple[int | None, str]:
    """The job number and override list Hydra recorded for a run directory, where present."""
    num, overrides = None, ""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        try:
            hydra_cfg = _read_yaml(hydra_file).get("hydra", {})
            num = hydra_cfg.get("job", {}).get("num")
            overrides = " ".join(hydra_cfg.get("overrides", {}).get("task", []) or [])
        except Exception:  # noqa: BLE001 - a broken hydra.yaml only costs the label
            pass
    return (int(num) if isinstance(num, int) or (isinstance(num, str) and num.isdigit()) else None), overrides


#: the identifying fields of a run, and where a composed config (``.hydra/config.yaml``, W&B) holds them
CONFIG_FIELDS = {
    "benchmark": ("data", "benchmark", "name"), "model": ("model", "short_name"), "method": ("method", "name"),
    "label_source": ("data", "label_source"), "fraction": ("data", "fraction"),
    "rationale_weight": ("method", "rationale_weight"), "alpha": ("method", "alpha"), "seed": ("seed",),
    "global_batch_size": ("data", "batch_size"), "max_steps": ("trainer", "max_steps"), "lr": ("optimizer", "lr"),
    "shared_input": ("method", "shared_input"), "rationales": ("data", "rationales"),
    "rationale_filter": ("data", "rationale_filter"), "rationale_position": ("method", "rationale_position"),
}


def identity_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """:data:`CONFIG_FIELDS` read from a composed config, nested or flattened (``data/fraction``, as
    W&B may store it); an unresolved interpolation reads as None."""

    def get(keys: tuple[str, ...]) -> Any:
        if "/".join(keys) in cfg:
            return cfg["/".join(keys)]
        node: Any = cfg
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return None if isinstance(node, str) and "${" in node else node

    return {field: get(keys) for field, keys in CONFIG_FIELDS.items()}


def _config_from_hydra(run_dir: Path) -> dict[str, Any]:
    """The identifying fields of a run from its ``.hydra/config.yaml`` ({} where it has none)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return identity_from_config(_read_yaml(path) or {})
    except Exception:  # noqa: BLE001
        return {}


def read_run(run_dir: Path) -> Run:
    """One run directory: its ``results.json`` if there is a usable one, else a failed :class:`Run`."""
    num, overrides = _job_label(run_dir)
    job = (f"#{num} " if num is not None else "") + overrides
    path = run_dir / "results.json"
    if not path.is_file():
        return Run(str(run_dir), "failed", _config_from_hydra(run_dir), reason="no results.json", job=job)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return Run(str(run_dir), "failed", _config_from_hydra(run_dir), job=job,
                   reason=f"{path}:{error.lineno}: invalid JSON ({error.msg})")
    if not isinstance(data, dict):
        return Run(str(run_dir), "failed", _config_from_hydra(run_dir), job=job,
                   reason=f"{path}: expected a JSON object")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    # what results.json did not record (e.g. the learning rate, before it was) from the run's .hydra/
    config = {**{k: v for k, v in _config_from_hydra(run_dir).items() if v is not None}, **config}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    status = str(data.get("status", "missing status"))
    if status != "ok":
        reason = str(data.get("error") or data.get("reason") or f"status {status!r}")
        # a diverged run (distill.callbacks.divergence) is counted apart from runs that failed to finish
        kept = "diverged" if status == "diverged" else "failed"
        return Run(str(run_dir), kept, config or _config_from_hydra(run_dir), reason=f"{path}: {reason}", job=job)
    missing = [key for key in ("benchmark", "model", "method", "fraction", "seed") if key not in config]
    if missing:
        return Run(str(run_dir), "failed", config, job=job, reason=f"{path}: config lacks {', '.join(missing)}")
    numbers = {}
    for key, value in metrics.items():
        try:
            numbers[key] = float(value)
        except (TypeError, ValueError):
            continue
    if not any(key in numbers and math.isfinite(numbers[key]) for key in METRICS):
        return Run(str(run_dir), "failed", config, job=job,
                   reason=f"{path}: none of the metrics {', '.join(METRICS)} is a finite number")
    num_parameters = data.get("num_parameters")
    return Run(str(run_dir), "ok", config, numbers,
               int(num_parameters) if isinstance(num_parameters, (int, float)) else None, job=job)


def _is_run_dir(path: Path) -> bool:
    return (path / "results.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def expected_jobs(sweep_dir: Path) -> list[str] | None:
    """The override list of every job a Hydra sweep launched (index = job number), from its
    ``multirun.yaml``; None when the directory is not a basic-sweeper multirun directory."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = _read_yaml(path).get("hydra", {})
        if "basic_sweeper" not in str(hydra_cfg.get("sweeper", {}).get("_target_", "")):
            return None
        params = [f"{key}={value}" for key, value in (hydra_cfg.get("sweeper", {}).get("params") or {}).items()]
        params += list(hydra_cfg.get("overrides", {}).get("task", []) or [])
        overrides = OverridesParser.create().parse_overrides(params)
        batches = BasicSweeper.split_arguments(overrides, None)
        return [" ".join(job) for batch in batches for job in batch]
    except Exception:  # noqa: BLE001 - an unusual sweep only loses the "never started" check
        return None


def read_directory(root: Path) -> list[Run]:
    """Every run under ``root`` (a run directory, a multirun directory, or a folder of them),
    plus one failed :class:`Run` per job a multirun launched that left no directory."""
    if not root.exists():
        raise AggregateError(f"{root}: no such directory")
    if _is_run_dir(root):
        return [read_run(root)]
    runs: list[Run] = []
    run_dirs = sorted({p.parent for p in root.rglob("results.json")} | {p.parent.parent for p in root.rglob(".hydra/config.yaml")})
    # .superseded/: runs a resumed sweep moved aside (distill.launch.sweep_resume)
    run_dirs = [d for d in run_dirs if not {".submitit", ".superseded"} & set(d.relative_to(root).parts)]
    found_jobs: dict[Path, set[int]] = defaultdict(set)
    for run_dir in run_dirs:
        run = read_run(run_dir)
        runs.append(run)
        num, _ = _job_label(run_dir)
        if num is not None:
            found_jobs[run_dir.parent].add(num)
    for sweep_file in sorted(root.rglob("multirun.yaml")):
        sweep_dir = sweep_file.parent
        jobs = expected_jobs(sweep_dir)
        if jobs is None:
            continue
        for num, overrides in enumerate(jobs):
            if num not in found_jobs.get(sweep_dir, set()):
                runs.append(Run(str(sweep_dir), "failed", job=f"#{num} {overrides}",
                                reason="the job never made its output directory (see .submitit/ logs)"))
    return runs


def read_wandb(project: str, api: Any = None) -> list[Run]:
    """The runs of a W&B project (``entity/project`` or ``project``) through the public API."""
    if api is None:
        try:
            import wandb
        except ImportError as error:  # pragma: no cover - wandb is a dependency
            raise AggregateError("reading a W&B project needs the wandb package") from error
        try:
            api = wandb.Api(timeout=60)
        except Exception as error:  # noqa: BLE001 - no login, no network
            raise AggregateError(f"cannot reach W&B for {project!r}: {error}") from error
    runs = []
    for wb_run in api.runs(project):
        config = identity_from_config(dict(wb_run.config or {}))
        summary = dict(getattr(wb_run, "summary", {}) or {})
        metrics = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        source = "/".join(str(p) for p in getattr(wb_run, "path", [wb_run.id]))
        state = getattr(wb_run, "state", "unknown")
        if state != "finished":
            runs.append(Run(source, "failed", config, metrics, reason=f"W&B state {state!r}"))
        elif not any(m in metrics for m in METRICS):
            runs.append(Run(source, "failed", config, metrics, reason=f"no {' or '.join(METRICS)} in the summary"))
        else:
            runs.append(Run(source, "ok", config, metrics))
    return runs


def read_source(source: str) -> list[Run]:
    """A directory when the path exists (or looks like one), else a W&B project."""
    path = Path(source)
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        return read_directory(path.expanduser())
    try:
        return read_wandb(source)
    except AggregateError as error:
        raise AggregateError(f"{source}: not a directory here, and as a W&B project: {error}") from None


# ---------------------------------------------------------------------------- grouping
def method_label(method: Any, label_source: Any, shared_input: Any = False) -> str:
    """The paper's name for a method and label source (and the shared-input layout of step-by-step)."""
    gold = label_source in (None, "gold")
    if method == "standard":
        return "standard finetuning" if gold else "standard distillation"
    if method == "step_by_step":
        return ("distilling step-by-step" + ("" if gold else " (teacher labels)")
                + (" (shared input)" if shared_input else ""))
    if method == "single_task":
        return "single-task rationale+label" + ("" if gold else " (teacher labels)")
    return f"{method} ({label_source})"


def variant_label(key: dict[str, Any]) -> str:
    """The follow-up literature's choices a group made, where not the paper's (empty for the paper's)."""
    parts = []
    if key.get("label_source") == "teacher_vote":
        parts.append("vote labels")
    if key.get("rationales") not in (None, "first"):
        parts.append(f"{key['rationales']} rationales")
    if key.get("rationale_filter") not in (None, "none"):
        parts.append(str(key["rationale_filter"]).replace("_", "-"))
    if key.get("method") == "single_task" and key.get("rationale_position") == "after":
        parts.append("label first")
    return f" ({', '.join(parts)})" if parts else ""


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); None for n < 2."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) / math.sqrt(len(values))


@dataclass
class Group:
    """The runs of one configuration over seeds."""

    key: dict[str, Any]
    runs: list[Run]

    @property
    def label(self) -> str:
        return method_label(self.key["method"], self.key["label_source"], self.key.get("shared_input")) + \
            variant_label(self.key)

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics and math.isfinite(r.metrics[metric])]

    def stat(self, metric: str) -> tuple[float, float | None, int] | None:
        values = self.values(metric)
        if not values:
            return None
        mean, se = mean_se(values)
        return mean, se, len(values)

    @property
    def seeds(self) -> list[Any]:
        return sorted({r.config.get("seed") for r in self.runs}, key=str)

    @property
    def num_parameters(self) -> int | None:
        counts = [r.num_parameters for r in self.runs if r.num_parameters]
        return int(statistics.median(counts)) if counts else None


def _group_value(config: dict[str, Any], key: str) -> Any:
    """A run's value for a group key; runs from before a key was recorded made the paper's choice."""
    if key == "shared_input":
        return bool(config.get(key))
    if key == "rationale_position" and config.get("method") != "single_task":
        return GROUP_DEFAULTS[key]  # only single_task has the choice
    value = config.get(key)
    return GROUP_DEFAULTS[key] if value is None and key in GROUP_DEFAULTS else value


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Successful runs pooled by everything but the seed, in a stable order."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.ok:
            groups[tuple(_group_value(run.config, k) for k in GROUP_KEYS)].append(run)
    out = [Group(dict(zip(GROUP_KEYS, key)), members) for key, members in groups.items()]
    return sorted(out, key=lambda g: tuple(_sort_key(g.key[k]) for k in GROUP_KEYS))


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0, str(value))


def _model_rank(name: Any) -> int:
    return MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER)


# ---------------------------------------------------------------------------- formatting
def fmt_stat(stat: tuple[float, float | None, int] | None, scale: float = 100.0) -> str:
    if stat is None:
        return "-"
    mean, se, n = stat
    if se is None:
        return f"{mean * scale:.2f} (n={n})"
    return f"{mean * scale:.2f} ± {se * scale:.2f}"


def fmt_fraction(value: Any) -> str:
    try:
        return f"{float(value) * 100:g}%"
    except (TypeError, ValueError):
        return str(value)


def _series_label(group: Group, lambdas_vary: bool, lrs_vary: bool = False) -> str:
    label = group.label
    if group.key["method"] == "step_by_step" and lambdas_vary:
        if group.key["alpha"] is not None:
            label += f", α={group.key['alpha']:g}"
        else:
            label += f", λ={group.key['rationale_weight']:g}"
    if lrs_vary and group.key.get("lr") is not None:
        label += f", lr={group.key['lr']:g}"
    return label


def _lrs_vary(members: list[Group]) -> bool:
    return len({g.key.get("lr") for g in members}) > 1


def paper_tables(groups: list[Group], metric: str) -> list[str]:
    """Per (benchmark, student): methods x data fractions, mean ± SE over seeds, in percent."""
    lines: list[str] = []
    by_panel: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        by_panel[(g.key["benchmark"], g.key["model"])].append(g)
    for (benchmark, model), members in sorted(by_panel.items(), key=lambda kv: (str(kv[0][0]), _model_rank(kv[0][1]), str(kv[0][1]))):
        fractions = sorted({g.key["fraction"] for g in members}, key=_sort_key)
        lambdas_vary = len({(g.key["rationale_weight"], g.key["alpha"]) for g in members if g.key["method"] == "step_by_step"}) > 1
        lines += [f"### {benchmark} · {model} · {metric} (%)", ""]
        lines.append("| method | " + " | ".join(fmt_fraction(f) for f in fractions) + " |")
        lines.append("|---|" + "---:|" * len(fractions))
        rows: dict[str, dict[Any, Group]] = defaultdict(dict)
        for g in members:
            rows[_series_label(g, lambdas_vary, _lrs_vary(members))][g.key["fraction"]] = g
        for label in sorted(rows):
            cells = [fmt_stat(rows[label][f].stat(metric)) if f in rows[label] else "" for f in fractions]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def long_rows(groups: list[Group]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        row: dict[str, Any] = {**g.key, "method_label": g.label, "seeds": " ".join(str(s) for s in g.seeds),
                               "num_parameters": g.num_parameters}
        for metric in METRICS:
            stat = g.stat(metric)
            row[f"{metric}_n"] = stat[2] if stat else 0
            row[f"{metric}_mean"] = stat[0] if stat else None
            row[f"{metric}_se"] = stat[1] if stat else None
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(itertools.chain.from_iterable(row.keys() for row in rows)))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _display(text: str) -> str:
    """Paths under the working directory shown relative to it (reports get committed)."""
    cwd = str(Path.cwd()) + "/"
    return text.replace(cwd, "")


def markdown_report(runs: list[Run], groups: list[Group], metric: str, sources: Sequence[str], paired: Any = None) -> str:
    ok = [r for r in runs if r.ok]
    failed = [r for r in runs if not r.ok]
    diverged = sum(r.status == "diverged" for r in failed)
    lines = [
        "# Results",
        "",
        f"Sources: {', '.join(f'`{_display(str(s))}`' for s in sources)}. {len(ok)} successful run(s), "
        f"{len(failed) - diverged} failed, {diverged} diverged (left out of every mean).",
        f"Cells: mean ± standard error over seeds of `{metric}` in percent; `(n=1)` where one seed ran.",
        "",
    ]
    lines += paper_tables(groups, metric)
    if paired is not None:
        lines += paired_table(paired, metric)
    lines += ["### All configurations", "",
              "| benchmark | model | method | labels | fraction | λ | α | steps | lr | seeds | " + " | ".join(METRICS) + " |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---|" + "---:|" * len(METRICS)]
    for g in groups:
        k = g.key
        cells = [str(k["benchmark"]), str(k["model"]), g.label, str(k["label_source"]), fmt_fraction(k["fraction"]),
                 "" if k["rationale_weight"] is None or k["method"] != "step_by_step" else f"{k['rationale_weight']:g}",
                 "" if k["alpha"] is None else f"{k['alpha']:g}", str(k["max_steps"]),
                 "" if k.get("lr") is None else f"{k['lr']:g}", " ".join(str(s) for s in g.seeds)]
        cells += [fmt_stat(g.stat(m)) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if failed:
        lines += ["### Failed and diverged runs", "", "| run | status | job | reason |", "|---|---|---|---|"]
        for r in failed:
            lines.append(f"| `{_display(r.source)}` | {r.status} | {r.job.replace('|', '/')} | "
                         f"{_display(r.reason).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- paired differences
def runs_frame(runs: Iterable[Run], metric: str) -> Any:
    """The successful runs as a pandas DataFrame: group keys, seed, ``metric`` and the teacher's."""
    rows = [{**{k: _group_value(r.config, k) for k in GROUP_KEYS}, "seed": r.config.get("seed"),
             "value": r.metrics.get(metric), "teacher": r.metrics.get(TEACHER_METRIC)} for r in runs if r.ok]
    return pd.DataFrame(rows, columns=[*GROUP_KEYS, "seed", "value", "teacher"])


def _select(frame: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``frame`` equal to ``selector`` on each of its keys."""
    return frame[frame[list(selector)].eq(pd.Series(selector)).all(axis=1)]


def paired_differences(runs: Iterable[Run], metric: str) -> Any:
    """Per cell (:data:`CELL_KEYS`) and comparison (:data:`COMPARISONS`): the method minus its
    baseline seed by seed (seeds both ran), mean and standard error over those seeds, both means,
    and the teacher's test accuracy; one row per λ/α of the method."""
    frame = runs_frame(runs, metric).dropna(subset=["value"])
    cell = list(CELL_KEYS)
    tables = []
    for name, baseline, method in COMPARISONS:
        # the baseline makes the paper's choices; the method's own variants (λ, follow-up choices) are rows apart
        paper = {key: GROUP_DEFAULTS[key] for key in VARIANT_KEYS if key not in baseline}
        pairs = _select(frame, {**paper, **baseline}).merge(_select(frame, method), on=[*cell, "seed"], suffixes=("_base", ""))
        if pairs.empty:
            continue
        pairs["difference"] = pairs["value"] - pairs["value_base"]
        pairs["teacher"] = pairs["teacher"].fillna(pairs["teacher_base"])
        pairs["variant"] = [variant_label(row) for row in pairs[["method", *VARIANT_KEYS]].to_dict("records")]
        stats = (pairs.groupby([*cell, "rationale_weight", "alpha", "variant"], dropna=False, sort=True)
                 .agg(n=("difference", "size"), difference=("difference", "mean"), difference_se=("difference", "sem"),
                      baseline=("value_base", "mean"), method=("value", "mean"), teacher=("teacher", "mean"),
                      seeds=("seed", lambda seeds: " ".join(str(s) for s in sorted(seeds, key=str))))
                 .reset_index())
        stats.insert(0, "comparison", name)
        tables.append(stats)
    if not tables:
        return pd.DataFrame()
    return pd.concat(tables, ignore_index=True)


def _percent(value: Any, se: Any = None, n: Any = None) -> str:
    if value is None or pd.isna(value):
        return "-"
    if se is None:
        return f"{value * 100:.2f}"
    if pd.isna(se):
        return f"{value * 100:+.2f} (n={int(n)})"
    return f"{value * 100:+.2f} ± {se * 100:.2f}"


def _loss_weight(rationale_weight: Any, alpha: Any) -> str:
    """The method's loss weight as the tables print it: ``α=...`` for the official form, else λ."""
    if alpha is not None and not pd.isna(alpha):
        return f"α={alpha:g}"
    return "" if rationale_weight is None or pd.isna(rationale_weight) else f"{rationale_weight:g}"


def paired_table(paired: Any, metric: str) -> list[str]:
    """The paired differences as a Markdown section (empty when nothing pairs)."""
    if paired.empty:
        return []
    table = paired.assign(**{
        "fraction": paired["fraction"].map(fmt_fraction),
        "λ": [_loss_weight(w, a) for w, a in zip(paired["rationale_weight"], paired["alpha"])],
        "baseline (%)": paired["baseline"].map(_percent),
        "method (%)": paired["method"].map(_percent),
        "difference (points)": [_percent(d, se, n) for d, se, n in zip(paired["difference"], paired["difference_se"], paired["n"])],
        "teacher (%)": paired["teacher"].map(_percent),
    }).rename(columns={"max_steps": "steps"})
    columns = ["comparison", "benchmark", "model", "fraction", "steps", "λ", "seeds", "baseline (%)", "method (%)",
               "difference (points)", "teacher (%)"]
    if paired["variant"].astype(bool).any():
        columns.insert(columns.index("λ"), "variant")
    return [f"### Paired differences · {metric}", "",
            "Each method minus its baseline on the same cell and seed (seeds both ran), mean ± standard error "
            "over seeds, in percentage points; the teacher's own accuracy on the same test examples beside it.", "",
            table[columns].to_markdown(index=False, disable_numparse=True), ""]


# ---------------------------------------------------------------------------- plots
def plot_by_benchmark(groups: list[Group], runs: list[Run], metric: str, path: Path) -> bool:
    """Bars per benchmark and training fraction, one per method (mean ± standard error), the
    teacher's accuracy marked; one panel per student. False when no panel has two methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = runs_frame(runs, metric).groupby("benchmark")["teacher"].mean().to_dict()
    panels: dict[Any, list[Group]] = defaultdict(list)
    for g in groups:
        if g.stat(metric) is not None:
            panels[g.key["model"]].append(g)
    panels = {k: v for k, v in panels.items() if len({g.label for g in v}) >= 2}
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (model, members) in zip(axes.flat, sorted(panels.items(), key=lambda kv: (_model_rank(kv[0]), str(kv[0])))):
        cells = sorted({(g.key["benchmark"], g.key["fraction"]) for g in members}, key=lambda c: (str(c[0]), _sort_key(c[1])))
        labels = sorted({g.label for g in members})
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            stats = {(g.key["benchmark"], g.key["fraction"]): g.stat(metric) for g in members if g.label == label}
            xs = [c + (i - (len(labels) - 1) / 2) * width for c in range(len(cells))]
            ys = [stats[c][0] * 100 if c in stats else float("nan") for c in cells]
            errs = [(stats[c][1] or 0.0) * 100 if c in stats else 0.0 for c in cells]
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=label)
        marked = False
        for c, (benchmark, _) in enumerate(cells):
            value = teacher.get(benchmark)
            if value is not None and value == value:
                ax.hlines(value * 100, c - 0.45, c + 0.45, colors="black", linestyles="dashed",
                          label=None if marked else "teacher")
                marked = True
        ax.set_xticks(range(len(cells)), [f"{b}\n{fmt_fraction(f)} of train" for b, f in cells], fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(str(model), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _plot_panels(groups: list[Group], metric: str, panel_keys: tuple[str, ...], x_of: Any, xlabel: str,
                 path: Path, logx: bool = False, xticks: Any = None) -> bool:
    """One subplot per panel, one line per method; returns False when no panel has 2+ x values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        if g.stat(metric) is not None and x_of(g) is not None:
            panels[tuple(g.key[k] for k in panel_keys)].append(g)
    panels = {k: v for k, v in panels.items() if len({x_of(g) for g in v}) >= 2}
    if not panels:
        return False
    n = len(panels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (panel, members) in zip(axes.flat, sorted(panels.items(), key=lambda kv: tuple(map(str, kv[0])))):
        lambdas_vary = len({(g.key["rationale_weight"], g.key["alpha"]) for g in members if g.key["method"] == "step_by_step"}) > 1
        series: dict[str, list[Group]] = defaultdict(list)
        for g in members:
            series[_series_label(g, lambdas_vary, _lrs_vary(members)) if x_of is not _lambda_x else g.label].append(g)
        for label, points in sorted(series.items()):
            points.sort(key=x_of)
            xs = [x_of(g) for g in points]
            stats = [g.stat(metric) for g in points]
            ys = [s[0] * 100 for s in stats]
            errs = [(s[1] or 0.0) * 100 for s in stats]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
        if logx:
            ax.set_xscale("log")
        if xticks:
            xticks(ax, members)
        ax.set_title(" · ".join(str(p) for p in panel), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _lambda_x(g: Group) -> float | None:
    if g.key["method"] != "step_by_step":
        return None
    return g.key["rationale_weight"] if g.key["alpha"] is None else None


def write_plots(groups: list[Group], metric: str, out: Path) -> list[Path]:
    written = []

    def fraction_ticks(ax: Any, members: list[Group]) -> None:
        fractions = sorted({float(g.key["fraction"]) for g in members})
        ax.set_xticks(fractions, [fmt_fraction(f) for f in fractions])
        ax.minorticks_off()

    path = out / "accuracy_vs_fraction.png"
    if _plot_panels(groups, metric, ("benchmark", "model"), lambda g: float(g.key["fraction"]),
                    "training data used", path, logx=True, xticks=fraction_ticks):
        written.append(path)

    sizes_known = all(g.num_parameters for g in groups)

    def size_x(g: Group) -> float:
        return float(g.num_parameters) if sizes_known else float(_model_rank(g.key["model"]))

    def size_ticks(ax: Any, members: list[Group]) -> None:
        ticks = sorted({(size_x(g), g.key["model"]) for g in members})
        ax.set_xticks([t[0] for t in ticks], [f"{t[1]}" + (f"\n{t[0] / 1e6:.0f}M" if sizes_known else "") for t in ticks],
                      fontsize=7)
        ax.minorticks_off()

    path = out / "accuracy_vs_model_size.png"
    if _plot_panels(groups, metric, ("benchmark", "fraction"), size_x,
                    "student size (parameters)" if sizes_known else "student", path, logx=sizes_known, xticks=size_ticks):
        written.append(path)

    path = out / "accuracy_vs_lambda.png"
    if _plot_panels(groups, metric, ("benchmark", "model", "fraction"), _lambda_x, "λ (rationale loss weight)", path):
        written.append(path)
    return written


# ---------------------------------------------------------------------------- entry point
def aggregate(sources: Sequence[str], out: Path, metric: str = "test/acc") -> dict[str, Any]:
    """Read, group, and write every output; returns what was written and the failed runs."""
    runs: list[Run] = []
    for source in sources:
        runs.extend(read_source(source))
    if not runs:
        raise AggregateError(f"no runs found under {', '.join(sources)}")
    groups = group_runs(runs)
    if not groups:
        reasons = "; ".join(f"{r.source}: {r.reason}" for r in runs[:10])
        raise AggregateError(f"none of the {len(runs)} run(s) succeeded: {reasons}")
    out.mkdir(parents=True, exist_ok=True)
    paired = paired_differences(runs, metric)
    (out / "results.md").write_text(markdown_report(runs, groups, metric, sources, paired))
    write_csv(out / "results.csv", long_rows(groups))
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)
    write_csv(out / "runs.csv", [
        {"source": r.source, "status": r.status, "reason": r.reason, "job": r.job,
         **{k: r.config.get(k) for k in (*GROUP_KEYS, "seed")},
         **{m: r.metrics.get(m) for m in METRICS}, "num_parameters": r.num_parameters}
        for r in runs
    ])
    plots = write_plots(groups, metric, out)
    if plot_by_benchmark(groups, runs, metric, out / "accuracy_by_benchmark.png"):
        plots.insert(0, out / "accuracy_by_benchmark.png")
    return {"runs": runs, "groups": groups, "plots": plots, "failed": [r for r in runs if not r.ok]}


#: what :func:`keep_runs` copies of a run: enough to rebuild every table, nothing large
KEPT_FILES = ("results.json", "sweep_job.json", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
#: and its CSV curves: ``metrics.csv`` and the parts a resumed run kept (:func:`distill.training.keep_csv_history`)
KEPT_CURVES = "csv/**/metrics*.csv"


def keep_runs(sources: Sequence[str], destination: Path) -> int:
    """Copy the small files of every run directory under ``sources`` (:data:`KEPT_FILES`; never a
    checkpoint) to ``destination/<sweep>/<run>/``; returns how many runs."""
    import shutil

    copied = 0
    for source in sources:
        root = Path(source).expanduser()
        for results in sorted(root.rglob("results.json")):
            run_dir = results.parent
            if {".submitit", ".superseded"} & set(run_dir.relative_to(root).parts):
                continue
            # a sweep keeps its name; a run directory given alone, its sweep's name and its own
            base = destination / root.parent.name / root.name if root == run_dir else destination / root.name
            target = base / run_dir.relative_to(root)
            files = [run_dir / name for name in KEPT_FILES] + sorted(run_dir.glob(KEPT_CURVES))
            for found in files:
                if found.is_file():
                    copy = target / found.relative_to(run_dir)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(found, copy)
            copied += 1
    return copied


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
    diverged = sum(r.status == "diverged" for r in result["failed"])
    print(f"{ok} run(s) in {len(result['groups'])} configuration(s) -> {args.out}/results.md, results.csv, runs.csv"
          f" ({len(result['failed']) - diverged} failed, {diverged} diverged: left out)")
    for plot in result["plots"]:
        print(f"plot: {plot}")
    for run in result["failed"]:
        print(f"{run.status.upper()} {run.source} {run.job}: {run.reason}", file=sys.stderr)
    return 1 if args.strict and result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
