"""The GPU check of issue 17 (``bash scripts/gpu_check.sh`` runs it): ``python -m distill.bench``'s
measurement of two students, each plain vs fast vs fast with one pass over the input
(``method.shared_input=true``), every run in a fresh process under a time limit that keeps the
whole check inside its budget. It writes, under ``$OUT``:

    gpu_check.txt   the bench tables (and per-mode profiles), one per student, as they finish
    results.json    every run's figures (distill.bench's own fields), or its error
    runs.log        the tail of every run's output

``GPU_CHECK_SMOKE=1``: the same runs on this CPU with tiny students and one step (a test of the
script, not a measurement).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from distill.bench import RESULT_MARKER, format_table

SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
#: seconds all runs together may take, and the most one run may take
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", 120 if SMOKE else 420))
RUN_CAP_S = float(os.environ.get("GPU_CHECK_RUN_CAP_S", 120 if SMOKE else 150))
#: what every later run is left at least, when an earlier one is given its limit
RESERVE_S = 10 if SMOKE else 45

#: the mode's name -> its overrides
MODES = {
    "plain": ["speed=plain"],
    "fast": ["speed=fast"],
    "fast+shared": ["speed=fast", "method.shared_input=true"],
}


def students(data_dir: str, tokenizer: str) -> dict[str, list[str]]:
    """The two students of the check, with their data and bench settings."""
    common = ["logger=none", "data=cqa", f"paths.data_dir={data_dir}", f"model.name_or_path={tokenizer}",
              "method=step_by_step"]
    if SMOKE:
        common += ["trainer=cpu", "threads=1", "data.fraction=0.02", "data.batch_size=4", "data.eval_batch_size=4",
                   "bench.steps=1", "bench.warmup=0", "bench.eval_batches=1"]
        return {
            "t5_base_shaped": [*common, "model=tiny"],
            "smollm2_shaped": [*common, "model=tiny_causal", "model.hidden_size=72", "model.intermediate_size=96",
                               "model.num_layers=1", "model.num_heads=9", "model.num_key_value_heads=3"],
        }
    common += ["trainer=gpu", "data.batch_size=64", "data.eval_batch_size=64", "optimizer.lr=5e-5",
               "bench.steps=20", "bench.warmup=3", "bench.eval_batches=2", "bench.profile=2"]
    return {
        # README.md, Speed: T5 v1.1-base's shape built from a config, MiniLM vocabulary (221.7M parameters)
        "t5_base_shaped": [*common, "model=tiny", "model.d_model=768", "model.d_ff=2048", "model.num_layers=12",
                           "model.num_heads=12"],
        # SmolLM2-135M's shape (hidden 576, 1536, 30 layers, 9 query / 3 key-value heads), MiniLM vocabulary
        "smollm2_shaped": [*common, "model=tiny_causal", "model.hidden_size=576", "model.intermediate_size=1536",
                           "model.num_layers=30", "model.num_heads=9", "model.num_key_value_heads=3"],
    }


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_one(overrides: list[str], timeout: float, log: Path) -> dict:
    """One bench run in a fresh process (``distill.bench --one``): its figures, or ``{"error": ...}``."""
    command = [sys.executable, "-m", "distill.bench", "--one", *overrides]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, status = done.stdout, done.stderr, f"exit {done.returncode}"
    except subprocess.TimeoutExpired as expired:  # what it printed comes as bytes, whatever text= said
        stdout, stderr = (_text(expired.stdout), _text(expired.stderr))
        status = f"killed after its {timeout:.0f} s limit"
    seconds = time.perf_counter() - started
    with log.open("a") as f:
        f.write(f"\n===== {' '.join(overrides)}: {status}, {seconds:.0f} s\n{stdout[-4000:]}\n--- stderr\n{stderr[-8000:]}\n")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return {**json.loads(line[len(RESULT_MARKER):]), "run_seconds": seconds}
    return {"error": f"{status}: {(stderr or stdout).strip().splitlines()[-1:] or ['no output']}", "run_seconds": seconds}


def main() -> int:
    out = Path(os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("GPU_CHECK_DATA", ".gpu_data")
    tokenizer = os.environ.get("GPU_CHECK_TOKENIZER", str(Path(data_dir) / "minilm"))
    plan = [(name, mode, [*overrides, *MODES[mode]]) for name, overrides in students(data_dir, tokenizer).items()
            for mode in MODES]
    report, log = out / "gpu_check.txt", out / "runs.log"
    results: dict[str, dict[str, dict]] = {}
    deadline = time.perf_counter() + BUDGET_S
    for index, (name, mode, overrides) in enumerate(plan):
        left = len(plan) - index - 1
        timeout = min(RUN_CAP_S, deadline - time.perf_counter() - RESERVE_S * left)
        if timeout < RESERVE_S:
            results.setdefault(name, {})[mode] = {"error": "not run: the check's time budget was spent"}
            continue
        print(f"gpu_check: {name} {mode} (limit {timeout:.0f} s)", flush=True)
        results.setdefault(name, {})[mode] = run_one(overrides, timeout, log)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    with report.open("a") as f:
        for name, by_mode in results.items():
            done = {mode: r for mode, r in by_mode.items() if "error" not in r}
            f.write(f"\n## {name}\n")
            if done:
                f.write(format_table(done) + "\n")
            for mode, r in by_mode.items():
                if "error" in r:
                    f.write(f"  {mode}: FAILED {r['error']}\n")
                elif r.get("profile"):
                    f.write(f"\n{mode}: {r['profile']}\n")
    print(report.read_text(), flush=True)
    failed = [f"{name}/{mode}" for name, by_mode in results.items() for mode, r in by_mode.items() if "error" in r]
    if failed:
        print(f"gpu_check: failed or not run: {', '.join(failed)} (see {log})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
