"""Reading runs: a run directory's ``results.json`` and ``.hydra/``, every run under a folder of
sweeps (with one failed :class:`Run` per job a sweep launched that left no directory), a W&B
project through its public API; and copying the small files of runs to keep them (``--keep-runs``).
Nothing is dropped silently: a run that cannot be used is a :class:`Run` with its reason."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from distill.results.identity import REQUIRED, read_identity

#: the metrics a result is reported on
METRICS = ("test/acc", "val/acc_best")
#: the teacher's own accuracy on a run's test examples (training records it where the teacher has them)
TEACHER_METRIC = "test/teacher_acc"
#: what :func:`keep_runs` copies of a run: enough to rebuild every table, nothing large
KEPT_FILES = ("results.json", "sweep_job.json", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
#: and its CSV curves: ``metrics.csv`` and the parts a resumed run kept (:func:`distill.training.keep_csv_history`)
KEPT_CURVES = "csv/**/metrics*.csv"
#: folders of a sweep that hold no current run (.superseded/: runs a resumed sweep moved aside)
SKIPPED_DIRS = {".submitit", ".superseded"}


class AggregateError(RuntimeError):
    """Nothing usable to aggregate, or a source that cannot be read."""


#: a sweep's job whose run has no results.json (running now, or killed: a rerun resumes it), and one
#: that never made its run directory
UNFINISHED, NOT_STARTED = "unfinished", "not started"


@dataclass
class Run:
    """One run of a sweep, successful or not; ``config`` holds its identity as recorded."""

    source: str  # run directory or W&B run path
    status: str  # "ok", or why it is not usable ("failed", "diverged", "unfinished", "not started")
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    num_parameters: int | None = None
    reason: str = ""
    job: str = ""  # the sweep's job number and overrides, where known
    precision: str | None = None  # what it trained in; not identity
    train_seconds: float | None = None  # its fit's wall time, as results.json records it
    steps: int | None = None  # the optimizer steps it trained (early stopping: before the cap)
    curve: tuple[tuple[int, float], ...] = ()  # (step, val/acc) at each validation, from its metrics CSV

    @property
    def best_step(self) -> int | None:
        """The first step of the best validation accuracy: the checkpoint a run tests."""
        return max(self.curve, key=lambda point: (point[1], -point[0]))[0] if self.curve else None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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


def _config_from_hydra(run_dir: Path) -> dict[str, Any]:
    """The identity of a run from its ``.hydra/config.yaml`` ({} where it has none)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return read_identity(_read_yaml(path) or {})
    except Exception:  # noqa: BLE001
        return {}


def read_run(run_dir: Path) -> Run:
    """One run directory: its ``results.json`` if there is a usable one, else a failed :class:`Run`."""
    num, overrides = _job_label(run_dir)
    job = (f"#{num} " if num is not None else "") + overrides
    recorded = _config_from_hydra(run_dir)
    path = run_dir / "results.json"

    def failed(reason: str, config: dict[str, Any] = recorded, status: str = "failed") -> Run:
        return Run(str(run_dir), status, config, reason=reason, job=job)
    if not path.is_file():  # running now, or killed: a rerun of the sweep resumes it
        return failed("no results.json", status=UNFINISHED)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return failed(f"{path}:{error.lineno}: invalid JSON ({error.msg})")
    if not isinstance(data, dict):
        return failed(f"{path}: expected a JSON object")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    # what results.json did not record (e.g. the learning rate, before it was) from the run's .hydra/
    config = {**{k: v for k, v in recorded.items() if v is not None}, **config}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    status = str(data.get("status", "missing status"))
    if status != "ok":
        reason = str(data.get("error") or data.get("reason") or f"status {status!r}")
        # a diverged run (distill.callbacks.divergence) is counted apart from runs that failed to finish
        return failed(f"{path}: {reason}", config or recorded, "diverged" if status == "diverged" else "failed")
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        return failed(f"{path}: config lacks {', '.join(missing)}", config)
    numbers = {}
    for key, value in metrics.items():
        try:
            numbers[key] = float(value)
        except (TypeError, ValueError):
            continue
    if not any(key in numbers and math.isfinite(numbers[key]) for key in METRICS):
        return failed(f"{path}: none of the metrics {', '.join(METRICS)} is a finite number", config)
    precision = config.get("precision")
    num_parameters, train_seconds, steps = (data.get(k) for k in ("num_parameters", "train_seconds", "global_step"))
    return Run(str(run_dir), "ok", config, numbers,
               int(num_parameters) if isinstance(num_parameters, (int, float)) else None, job=job,
               precision=str(precision) if precision is not None else None,
               train_seconds=float(train_seconds) if isinstance(train_seconds, (int, float)) else None,
               steps=int(steps) if isinstance(steps, (int, float)) else None, curve=read_curve(run_dir))


def read_curve(run_dir: Path) -> tuple[tuple[int, float], ...]:
    """``(optimizer steps, val/acc)`` of every validation in the run's metrics CSVs (the parts of a resumed run
    together, a step logged twice read once, the later part winning); () where there is none."""
    points: dict[int, float] = {}
    for path in sorted(run_dir.glob(KEPT_CURVES), key=lambda p: p.stat().st_mtime):
        try:
            frame = pd.read_csv(path, usecols=lambda c: c in ("step", "val/acc"))
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if {"step", "val/acc"} <= set(frame.columns):
            for step, acc in frame.dropna(subset=["val/acc"])[["step", "val/acc"]].itertuples(index=False):
                points[int(step) + 1] = float(acc)  # the CSV's step counts from 0: step 99 is the 100th
    return tuple(sorted(points.items()))


def expected_jobs(sweep_dir: Path) -> list[str] | None:
    """The override list of every job a Hydra basic-sweeper sweep launched (index = job number),
    from its ``multirun.yaml``, expanded as the basic sweeper does (its params, then the command
    line's; the last value of a key wins, in the key's first place); None for another sweeper."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = _read_yaml(path).get("hydra", {})
        if "basic_sweeper" not in str(hydra_cfg.get("sweeper", {}).get("_target_", "")):
            return None
        params = [f"{key}={value}" for key, value in (hydra_cfg.get("sweeper", {}).get("params") or {}).items()]
        params += list(hydra_cfg.get("overrides", {}).get("task", []) or [])
        axes: dict[str, list[str]] = {}
        for override in OverridesParser.create().parse_overrides(params):
            key = override.get_key_element()
            if not override.is_sweep_override():
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                return None  # the basic sweeper refuses an interval sweep
        return [" ".join(job) for job in itertools.product(*axes.values())]
    except Exception:  # noqa: BLE001 - an unusual sweep only loses the "never started" check
        return None


def read_directory(root: Path) -> list[Run]:
    """Every run under ``root`` (a run directory, a multirun directory, or a folder of them),
    plus one failed :class:`Run` per job a multirun launched that left no directory."""
    if not root.exists():
        raise AggregateError(f"{root}: no such directory")
    if (root / "results.json").is_file() or (root / ".hydra" / "config.yaml").is_file():
        return [read_run(root)]
    runs: list[Run] = []
    run_dirs = sorted({p.parent for p in root.rglob("results.json")} | {p.parent.parent for p in root.rglob(".hydra/config.yaml")})
    run_dirs = [d for d in run_dirs if not SKIPPED_DIRS & set(d.relative_to(root).parts)]
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
                runs.append(Run(str(sweep_dir), NOT_STARTED, job=f"#{num} {overrides}",
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
        config = read_identity(dict(wb_run.config or {}))
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


def keep_runs(sources: Sequence[str], destination: Path) -> int:
    """Copy the small files of every run directory under ``sources`` (:data:`KEPT_FILES`; never a
    checkpoint) to ``destination/<sweep>/<run>/``; returns how many runs."""
    copied = 0
    for source in sources:
        root = Path(source).expanduser()
        for results in sorted(root.rglob("results.json")):
            run_dir = results.parent
            if SKIPPED_DIRS & set(run_dir.relative_to(root).parts):
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
