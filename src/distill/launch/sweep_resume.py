"""Resumable sweeps (``resume_sweep: true``; docs/clusters.md): each multirun job looks at its own run
directory first and is **skipped** (a finished ``ok`` run of the same config), **resumed** (the same
config and a ``checkpoints/last.ckpt``) or **started** (anything else, whatever was there moved to
``<sweep dir>/.superseded/<job>.<n>/``). "The same config" is :func:`job_fingerprint`, recorded with
the decision in ``<run dir>/sweep_job.json``; :class:`SweepResumeCallback` counts the decisions of a rerun."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from distill.utils.runtime import scrub_secrets

log = logging.getLogger(__name__)

#: each job's record of its config and decision, in its run directory
JOB_RECORD = "sweep_job.json"
#: the id of the sweep's latest (re)run, in the sweep directory
SWEEP_RECORD = "sweep_resume.json"
#: where a run directory's old contents go when the job starts again, in the sweep directory
SUPERSEDED_DIR = ".superseded"
#: top-level config keys that are not part of a job's identity: where things live, how it resumes
VOLATILE_KEYS = ("paths", "ckpt_path", "resume_sweep")
#: what stays in a run directory when the rest is moved aside: the config Hydra has just written
KEPT_ON_RESTART = (".hydra",)

SKIPPED, RESUMED, STARTED = "skipped", "resumed", "started"


@dataclass(frozen=True)
class JobDecision:
    """What a sweep job does with its run directory: ``action`` is skipped / resumed / started;
    ``reason`` says why; ``ckpt_path`` (resumed) and ``results`` (skipped) go with it."""

    action: str
    reason: str
    ckpt_path: str | None = None
    results: dict[str, Any] | None = None
    moves_aside: bool = False

    @property
    def skipped(self) -> bool:
        return self.action == SKIPPED


# ---------------------------------------------------------------------------- identity
def _portable(value: Any, roots: list[tuple[str, str]]) -> Any:
    """``value`` with every path under one of ``roots`` (absolute dir, token) written with the token."""
    if isinstance(value, dict):
        return {k: _portable(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, roots) for v in value]
    if isinstance(value, str):
        for root, token in roots:
            if value == root or value.startswith(root + os.sep):
                return token + value[len(root):]
    return value


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that names a job: ``cfg`` without ``VOLATILE_KEYS`` or secrets, its
    directories under ``paths.*`` written as ``${paths.<key>}`` (longest first)."""
    plain = scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
    paths = plain.get("paths") or {}
    roots = sorted(((str(Path(v)), f"${{paths.{k}}}") for k, v in paths.items()
                    if isinstance(v, str) and os.path.isabs(v)), key=lambda rt: -len(rt[0]))
    return _portable({k: v for k, v in plain.items() if k not in VOLATILE_KEYS}, roots)


def job_fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of an :func:`identity_config`."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


_ABSENT = "<absent>"


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs (a key one side lacks reads ``<absent>``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _added_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys ``new`` has and ``old`` lacks (a new subtree counts once, by its root)."""
    out: list[str] = []
    for key, value in new.items():
        if key not in old:
            out.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(old[key], dict):
            out += _added_keys(old[key], value, f"{prefix}{key}.")
    return out


def _drop(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    if not rest:
        return {k: v for k, v in config.items() if k != head}
    return {**config, head: _drop(config[head], rest)}


def new_defaults(old: dict[str, Any], new: dict[str, Any], overridden: frozenset[str] = frozenset()) -> list[str] | None:
    """The keys added since ``old`` was recorded when they are all ``new`` differs by and none is
    set by an override (``overridden``: the dotted keys the job's overrides set), else None."""
    added = [key for key in _added_keys(old, new)
             if not any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in overridden)]
    trimmed = new
    for key in added:
        trimmed = _drop(trimmed, key)
    return added if added and job_fingerprint(trimmed) == job_fingerprint(old) else None


# ---------------------------------------------------------------------------- the decision
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all (the other ranks of a job may be reading it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(partial, path)


def _has_previous_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds files of an earlier run: anything but Hydra's fresh config, logs
    (the job's ranks are writing them) and this module's record."""
    return any(entry.name not in (*KEPT_ON_RESTART, JOB_RECORD) and entry.suffix not in (".log", ".partial")
               for entry in (run_dir.iterdir() if run_dir.is_dir() else ()))


def decide(run_dir: Path, config: dict[str, Any], overridden: frozenset[str] = frozenset()) -> JobDecision:
    """What the job of ``config`` (an :func:`identity_config`; ``overridden``: the dotted keys its
    overrides set) does with ``run_dir`` (read only)."""
    record = _read_json(run_dir / JOB_RECORD)
    results_path = run_dir / "results.json"
    last = run_dir / "checkpoints" / "last.ckpt"
    if record is None:
        if _has_previous_files(run_dir):
            return JobDecision(STARTED, f"{run_dir} holds a run without {JOB_RECORD} (its config is unknown)",
                               moves_aside=True)
        return JobDecision(STARTED, "new job")
    same = "same config"
    if record.get("fingerprint") != job_fingerprint(config):
        added = new_defaults(record.get("config") or {}, config, overridden)
        if added is None:
            changed = _differences(record.get("config") or {}, config)
            return JobDecision(STARTED, "the config changed (" + "; ".join(changed[:5] or ["?"])
                               + (f"; {len(changed) - 5} more" if len(changed) > 5 else "") + ")", moves_aside=True)
        same = f"same config but for keys added since, at their defaults: {', '.join(added)}"
    if results_path.exists():
        results = _read_json(results_path)
        status = (results or {}).get("status")
        if status == "ok":
            return JobDecision(SKIPPED, f"finished (results.json, {same})", results=results)
        return JobDecision(STARTED, f"the run failed ({results_path}: status {status!r})", moves_aside=True)
    if last.is_file():
        return JobDecision(RESUMED, f"unfinished: resumed from {last} ({same})", ckpt_path=str(last))
    if _has_previous_files(run_dir):
        return JobDecision(STARTED, "unfinished and no last.ckpt yet", moves_aside=True)
    return JobDecision(STARTED, "new job")


def move_aside(run_dir: Path, sweep_dir: Path) -> Path:
    """Move ``run_dir``'s contents (all but ``KEPT_ON_RESTART``) to a fresh
    ``<sweep_dir>/.superseded/<job>.<n>``; a log file is copied there and emptied (Hydra's handler
    keeps appending to it)."""
    try:
        name = str(run_dir.relative_to(sweep_dir)).replace(os.sep, "_")
    except ValueError:
        name = run_dir.name
    n = 1
    while (target := sweep_dir / SUPERSEDED_DIR / f"{name}.{n}").exists():
        n += 1
    target.mkdir(parents=True)
    for entry in sorted(run_dir.iterdir()):
        if entry.name in KEPT_ON_RESTART:
            continue
        if entry.is_file() and entry.suffix == ".log":
            shutil.copy2(entry, target / entry.name)
            with entry.open("r+") as f:
                f.truncate(0)
        else:
            shutil.move(str(entry), str(target / entry.name))
    return target


# ---------------------------------------------------------------------------- inside a job
def _global_rank() -> int:
    """This process's rank as the launcher set it (submitit, SLURM, torchrun), before Lightning starts."""
    for key in ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID", "RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _sweep_dir() -> Path | None:
    """The sweep directory when this process runs a job of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).absolute()


def _overridden_keys() -> frozenset[str]:
    """The dotted config keys this job's overrides set (config-group choices such as ``method=...``
    choose a file and set no key themselves)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = set(hydra_cfg.runtime.choices)
    keys = (o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task)
    return frozenset(key for key in keys if key not in choices)


def prepare_job(cfg: DictConfig) -> JobDecision:
    """Called first in :func:`distill.training.train`: decides (:func:`decide`) what this sweep job
    does with its run directory, moves an old run aside, sets ``cfg.ckpt_path`` to ``last.ckpt``
    for a resumed job and writes ``sweep_job.json``. Outside a multirun, or with
    ``resume_sweep: false``, every job is started as it is configured."""
    sweep_dir = _sweep_dir()
    if sweep_dir is None or not cfg.get("resume_sweep", False):
        return JobDecision(STARTED, "not a resumable sweep job")
    run_dir = Path(cfg.paths.output_dir).absolute()
    config = identity_config(cfg)
    decision = decide(run_dir, config, _overridden_keys())
    rank0 = _global_rank() == 0  # every rank decides alike from the files; rank 0 alone changes them
    if decision.moves_aside and rank0:
        log.info("resume_sweep: the old contents of %s moved to %s", run_dir, move_aside(run_dir, sweep_dir))
    if decision.ckpt_path:
        with open_dict(cfg):
            cfg.ckpt_path = decision.ckpt_path
    if rank0:
        invocation = (_read_json(sweep_dir / SWEEP_RECORD) or {}).get("invocation")
        record = {"invocation": invocation, "action": decision.action, "reason": decision.reason,
                  "ckpt_path": decision.ckpt_path, "fingerprint": job_fingerprint(config), "config": config}
        _write_json(run_dir / JOB_RECORD, record)
    print(f"resume_sweep: {run_dir.name}: {decision.action}: {decision.reason}", flush=True)
    return decision


def finished_metric(decision: JobDecision, cfg: DictConfig) -> float | None:
    """What a skipped job returns to the sweeper: the finished run's ``cfg.optimized_metric``."""
    value = ((decision.results or {}).get("metrics") or {}).get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)


# ---------------------------------------------------------------------------- the launcher side
def count_actions(sweep_dir: Path, invocation: str) -> dict[str, int]:
    """How many jobs of the rerun ``invocation`` were skipped, resumed and started."""
    counts = {SKIPPED: 0, RESUMED: 0, STARTED: 0}
    for path in sorted(sweep_dir.rglob(JOB_RECORD)):
        if {SUPERSEDED_DIR, ".submitit"} & set(path.relative_to(sweep_dir).parts):
            continue
        record = _read_json(path) or {}
        if record.get("invocation") == invocation and record.get("action") in counts:
            counts[record["action"]] += 1
    return counts


class SweepResumeCallback(Callback):
    """Names each (re)run of a sweep (``sweep_resume.json``) and prints its skipped / resumed /
    started counts at the end. Does nothing for a config without ``resume_sweep: true``."""

    invocation: str | None = None  # this (re)run's id, set at its start

    @staticmethod
    def _sweep_dir(config: DictConfig) -> Path | None:
        if not config.get("resume_sweep", False):
            return None
        return Path(str(config.hydra.sweep.dir)).absolute()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None:
            return
        self.invocation = uuid.uuid4().hex
        _write_json(sweep_dir / SWEEP_RECORD, {"invocation": self.invocation})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None or self.invocation is None:
            return
        counts = count_actions(sweep_dir, self.invocation)
        print(f"resume_sweep: {sum(counts.values())} job(s) in {sweep_dir}: {counts[SKIPPED]} skipped (finished), "
              f"{counts[RESUMED]} resumed (from last.ckpt), {counts[STARTED]} started", flush=True)
