"""``python scripts/bench_scale.py``: e-SNLI at the paper's size, cold and warm start times and memory.

The shared copy of the release has no ``esnli_train.json`` (549,367 rows in the release). This
builds a stand-in in a temporary directory (never in the repository): the valid rows repeated to
551,152 rows, with the valid PaLM completions repeated to line up, cut into 101 shards of 5,500
(the release's layout), next to the real valid and test files. Then it runs, each twice with one
tokenized cache (cold: empty cache; warm: the cache the first run left)::

    python -m distill.data summary data=esnli paths.data_dir=TMP paths.cache_dir=TMP/cache
    python train.py data=esnli model=tiny trainer.max_steps=5 test=false ...

and prints each command's wall time, its time to the first training step (a callback,
:class:`FirstStepTimer`, prints it) and its peak memory: the summed RSS of the process and its
children (and their PSS, which counts pages a forked tokenizing process shares with its parent
once), sampled every 0.2 s, and the largest single process's (``/usr/bin/time``'s maximum RSS).

    python scripts/bench_scale.py [--repeats 56] [--dir DIR] [--keep] [--only summary|train]

``--repeats 1`` is a quick check of the plumbing (9,842 rows). The data comes from
``$DISTILL_SHARED_DATA`` or ``../shared/datasets`` (the valid/test files and their ``llm`` shards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from distill.benchmarks.io import shard_glob, shard_index, shard_name

__all__ = ["build_esnli_train", "FirstStepTimer", "measure", "main"]

SHARD_SIZE = 5500
#: 56 copies of the 9,842 valid rows: 551,152 rows in 101 shards, the release's train size (549,367) rounded up
DEFAULT_REPEATS = 56
FIRST_STEP = "bench_scale: first training step at"


class FirstStepTimer(pl.Callback):
    """Prints the seconds from process start to the first training batch (once)."""

    def __init__(self) -> None:
        self._done = False

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._done:
            return
        self._done = True
        import psutil

        started = psutil.Process().create_time()
        print(f"{FIRST_STEP} {time.time() - started:.1f} s", flush=True)


def shared_esnli(shared: str | Path | None = None) -> Path:
    """The shared release's ``esnli`` directory (valid/test files and ``llm`` shards)."""
    root = Path(shared or os.environ.get("DISTILL_SHARED_DATA") or Path.cwd().parent / "shared" / "datasets")
    directory = root / "esnli"
    if not (directory / "esnli_valid.json").is_file():
        raise SystemExit(f"{directory}/esnli_valid.json not found: set DISTILL_SHARED_DATA to the shared datasets")
    return directory


def _completions(directory: Path, split: str) -> list[str]:
    shards = sorted(directory.glob(shard_glob(split)), key=lambda p: shard_index(split, p.name))
    out: list[str] = []
    for shard in shards:
        out.extend(json.loads(shard.read_text(encoding="utf-8")))
    return out


def build_esnli_train(data_dir: str | Path, repeats: int = DEFAULT_REPEATS, shared: str | Path | None = None) -> int:
    """Write ``data_dir/esnli`` with a train file of ``repeats`` copies of the valid rows (and the
    teacher's shards to match), the valid/test files and shards linked from the shared copy. Returns the rows."""
    source = shared_esnli(shared)
    target = Path(data_dir) / "esnli"
    (target / "llm").mkdir(parents=True, exist_ok=True)
    for name in ("esnli_valid.json", "esnli_test.json"):
        link = target / name
        if not link.exists():
            link.symlink_to(source / name)
    for shard in (source / "llm").glob(shard_glob("*")):
        link = target / "llm" / shard.name
        if not link.exists():
            link.symlink_to(shard)
    rows = (source / "esnli_valid.json").read_text(encoding="utf-8").splitlines(keepends=True)
    rows = [row for row in rows if row.strip()]
    completions = _completions(source / "llm", "valid")
    if len(completions) != len(rows):
        raise SystemExit(f"{source}/llm: {len(completions)} valid completions for {len(rows)} rows")
    with (target / "esnli_train.json").open("w", encoding="utf-8") as handle:
        for _ in range(repeats):
            handle.writelines(rows)
    total = len(rows) * repeats
    all_completions = completions * repeats
    for index, start in enumerate(range(0, total, SHARD_SIZE)):
        shard = target / "llm" / shard_name("train", index)
        shard.write_text(json.dumps(all_completions[start : start + SHARD_SIZE]), encoding="utf-8")
    return total


def _tree_memory(process: Any) -> tuple[int, int]:
    """(summed RSS, summed PSS) of ``process`` and its children: RSS counts pages a forked child
    shares with its parent twice, PSS splits them (the memory the tree really holds)."""
    import psutil

    rss = pss = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            info = member.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return rss, pss


def measure(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run ``command``; its wall time, first-step time (if it prints one), peak tree RSS and exit code."""
    import psutil

    started = time.time()
    with log.open("w") as out:
        rss_file = log.with_suffix(".maxrss")
        timed = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *command] if Path("/usr/bin/time").exists() else command
        child = subprocess.Popen(timed, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=out, text=True)
        process = psutil.Process(child.pid)
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss, pss = _tree_memory(process)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        first_step = None
        assert child.stdout is not None
        for line in child.stdout:
            out.write(line)
            if line.startswith(FIRST_STEP) and first_step is None:
                first_step = float(line.split()[-2])
        code = child.wait()
        done.set()
        sampler.join()
    return {
        "rc": code,
        "wall_s": round(time.time() - started, 1),
        "first_step_s": first_step,
        "peak_tree_rss_gb": round(peak[0] / 2**30, 2),
        "peak_tree_pss_gb": round(peak[1] / 2**30, 2),
        # the largest single process's max RSS (/usr/bin/time %M, KiB)
        "max_proc_rss_gb": _max_rss_gb(rss_file),
    }


def _max_rss_gb(path: Path) -> float | None:
    try:
        return round(int(path.read_text().split()[-1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        return None


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/bench_scale.py", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="copies of the valid rows (56: 551,152)")
    parser.add_argument("--dir", default=None, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--only", choices=("summary", "train"), default=None)
    parser.add_argument("--shared", default=None, help="the shared datasets (default $DISTILL_SHARED_DATA or ../shared/datasets)")
    ns = parser.parse_args(argv)

    repo = Path(__file__).resolve().parents[1]
    work = Path(ns.dir) if ns.dir else Path(tempfile.mkdtemp(prefix="esnli_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir, cache_dir = work / "data", work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    built = time.time()
    rows = build_esnli_train(data_dir, ns.repeats, ns.shared)
    print(f"built {data_dir}/esnli/esnli_train.json: {rows:,} rows, {-(-rows // SHARD_SIZE)} shards "
          f"({time.time() - built:.0f} s); code from {repo}", flush=True)
    # this script's directory on the path: train.py imports FirstStepTimer from it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo / "src"), str(repo / "scripts")]), WANDB_MODE="disabled",
               HYDRA_FULL_ERROR="1")
    paths = [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
    commands = {
        "summary": [sys.executable, "-m", "distill.data", "summary", "data=esnli", *paths],
        "train": [
            sys.executable, str(repo / "train.py"), "data=esnli", "model=tiny", "trainer.max_steps=5",
            "trainer.limit_val_batches=2", "test=false", "logger=csv", "speed.cpu_bf16=false", *paths, f"paths.log_dir={work}/logs",
            f"hydra.run.dir={work}/runs/run", "+callbacks.first_step._target_=bench_scale.FirstStepTimer",
        ],
    }
    results = []
    try:
        for name, command in commands.items():
            if ns.only and name != ns.only:
                continue
            for start in ("cold", "warm"):
                if start == "cold":
                    shutil.rmtree(cache_dir, ignore_errors=True)
                load = _uptime()
                figures = measure(command, env, repo, work / f"{name}-{start}.log")
                figures.update(command=name, start=start, uptime_before=load, uptime_after=_uptime())
                results.append(figures)
                print(json.dumps(figures), flush=True)
                if figures["rc"] != 0:
                    print(f"{name} ({start}) failed: see {work / f'{name}-{start}.log'}", flush=True)
    finally:
        if not ns.keep and not ns.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'command':8} {'start':5} {'wall_s':>7} {'first_step_s':>12} {'tree_rss_gb':>11} {'tree_pss_gb':>11} "
          f"{'max_proc_gb':>11}")
    for r in results:
        first = "-" if r["first_step_s"] is None else f"{r['first_step_s']:.1f}"
        print(f"{r['command']:8} {r['start']:5} {r['wall_s']:7.1f} {first:>12} {r['peak_tree_rss_gb']:11.2f} "
              f"{r['peak_tree_pss_gb']:11.2f} "
              f"{r['max_proc_rss_gb'] or 0:11.2f}")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
