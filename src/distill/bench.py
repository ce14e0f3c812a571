"""Throughput yardstick (docs/speed.md)::

    python -m distill.bench [train.py overrides ...] [bench.KEY=VALUE ...]

builds what ``train.py`` would once per mode, each in a fresh process, and prints the modes side by side:
``bench.modes`` (``plain,fast``, each in the paper's layout; ``NAME+shared`` in the shared-input one; a ``speed=`` override
runs that one alone), ``bench.steps`` timed after ``bench.warmup``, ``bench.eval_batches`` of label
generation, ``bench.repeats`` (best of N), ``bench.profile`` (N more steps under ``torch.profiler``).
Writes nothing but Lightning's scratch files in a temporary folder."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from distill.utils.runtime import configure_openmp  # noqa: E402

configure_openmp()  # before torch is imported

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from distill.callbacks.profiler import StepProfiler  # noqa: E402
from distill.callbacks.throughput import ThroughputMeter  # noqa: E402
from distill.models.student import SEQ2SEQ, kind_of  # noqa: E402
from distill.training import build_datamodule, build_module, build_speed, build_trainer, runs_on_cuda  # noqa: E402
from distill.utils.runtime import configure_threads, find_conf_dir  # noqa: E402

BENCH_DEFAULTS: dict[str, Any] = {
    "steps": 20, "warmup": 3, "eval_batches": 4, "modes": "plain,fast", "repeats": 1, "profile": 0,
}
RESULT_MARKER = "distill-bench-result: "

#: what the table shows, with units; higher is better except where marked
FIGURES = {
    "train_examples_per_s": "examples/s",
    "train_tokens_per_s": "tokens/s",
    "seconds_per_step": "s (lower is better)",
    "computed_tokens_per_step": "positions (lower is better)",
    "eval_examples_per_s": "examples/s",
    "eval_decode_steps_per_batch": "forwards (lower is better; how long the labels written are)",
    "peak_memory_mb": "MiB (lower is better)",
    "mfu_percent": "% of the measured peak",
}


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def matmul_peak_flops(dtype: torch.dtype, device: str) -> float:
    """The best FLOP/s of a large square matmul in ``dtype`` on ``device``, measured now."""
    n, tries, calls = (8192, 5, 10) if device == "cuda" else (1024, 3, 1)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(tries):
        sync()
        started = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        sync()
        best = min(best, (time.perf_counter() - started) / calls)
    return 2 * n**3 / best


def non_embedding_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters outside embedding tables (and the output projection tied to them), split into the
    encoder's and the rest (decoder). A causal student is all decoder (transformers answers
    ``get_encoder()`` with the decoder stack itself there)."""
    embedding = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        embedding |= {id(p) for p in head.parameters()}
    encoder = model.get_encoder() if kind_of(model) == SEQ2SEQ and hasattr(model, "get_encoder") else None
    in_encoder = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    counts = {"encoder": 0, "decoder": 0}
    for p in model.parameters():  # each shared (tied) parameter once
        if id(p) not in embedding:
            counts["encoder" if id(p) in in_encoder else "decoder"] += p.numel()
    return counts


def compose_config(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    bench = dict(BENCH_DEFAULTS)
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.startswith("bench."):
            name = key[len("bench."):]
            if name not in bench:
                raise SystemExit(f"unknown option {key}; bench options: {', '.join('bench.' + k for k in bench)}")
            bench[name] = value if isinstance(bench[name], str) else int(value)
        else:
            overrides.append(arg)
    with initialize_config_dir(config_dir=str(find_conf_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return cfg, bench


def run(argv: list[str]) -> dict[str, Any]:
    """One configuration, measured in this process."""
    cfg, bench = compose_config(argv)
    configure_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed)
    speed = build_speed(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        cfg.paths.output_dir = scratch
        student = hydra.utils.instantiate(cfg.model)
        datamodule = build_datamodule(cfg, student.tokenizer, student.kind)
        module = build_module(cfg, datamodule, student, speed=speed)
        module.predictions_dir = None
        meter = ThroughputMeter(bench["warmup"], bench["steps"])
        callbacks: list[pl.Callback] = [meter]
        if bench["profile"] > 0:
            callbacks.append(StepProfiler(bench["warmup"] + bench["steps"], bench["profile"]))
        trainer = build_trainer(
            cfg, speed, datamodule, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            max_steps=bench["warmup"] + bench["steps"] + bench["profile"], val_check_interval=None, check_val_every_n_epoch=None,
            limit_val_batches=0, default_root_dir=scratch,
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, datamodule=datamodule)
        eval_trainer = build_trainer(
            cfg, speed, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False,
            limit_val_batches=bench["eval_batches"], default_root_dir=scratch,
        )
        module.val_acc_best.reset()
        decode_steps: list[int] = []  # output-projection calls: one per position a batch generates (its prompt's too)
        hook = module.model.get_output_embeddings().register_forward_hook(lambda *_: decode_steps.append(1))
        started = time.perf_counter()
        eval_trainer.validate(module, datamodule=datamodule, verbose=False)
        eval_seconds = time.perf_counter() - started
        hook.remove()
        eval_examples = min(bench["eval_batches"] * datamodule.eval_batch_size, len(datamodule.examples("val")))
        eval_batches = -(-eval_examples // datamodule.eval_batch_size)
    device = "cuda" if runs_on_cuda(cfg) else "cpu"
    precision = str(trainer.precision)
    peak = matmul_peak_flops(torch.bfloat16 if "bf16" in precision else torch.float32, device)
    params = non_embedding_parameters(module.model)
    model_flops = 6 * (params["encoder"] * meter.tokens["encoder"] + params["decoder"] * meter.tokens["decoder"])
    seconds = max(meter.seconds, 1e-9)
    return {
        "train_examples_per_s": meter.examples / seconds,
        "train_tokens_per_s": (meter.tokens["encoder"] + meter.tokens["decoder"]) / seconds,
        "seconds_per_step": seconds / max(meter.steps, 1),
        "computed_tokens_per_step": meter.computed / max(meter.steps, 1),
        "eval_examples_per_s": eval_examples / eval_seconds,
        "eval_decode_steps_per_batch": len(decode_steps) / max(eval_batches, 1),
        "peak_memory_mb": peak_memory_mb(),
        "mfu_percent": 100 * model_flops / seconds / peak,
        "matmul_peak_tflops": peak / 1e12,
        "precision": precision,
        "speed": speed.describe(),
        "global_batch": int(cfg.data.batch_size),
        "timed_steps": meter.steps,
        "threads": torch.get_num_threads(),
        "device": "cuda:" + torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "label": f"{cfg.data.benchmark.name} / {cfg.model.short_name} / {cfg.method.name}",
        "layout": "shared input" if datamodule.shared_input else "paper (marker before x)",
        "profile": callbacks[-1].summary if bench["profile"] > 0 else "",
    }


def run_in_subprocess(argv: list[str]) -> dict[str, Any]:
    """One configuration in a fresh interpreter (its own memory peak, its own caches)."""
    command = [sys.executable, "-m", "distill.bench", "--one", *argv]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise RuntimeError(f"bench run failed ({' '.join(argv)}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The modes side by side, each after the first with its ratio to the first."""
    modes = list(results)
    first = results[modes[0]]
    lines = [f"distill bench: {first['label']}  ({first['device']}, {first['threads']} threads, "
             f"global batch {first['global_batch']}, {first['timed_steps']} timed steps)"]
    for mode in modes:
        r = results[mode]
        lines.append(f"  {mode}: {r['speed']}; layout {r.get('layout', 'paper')}; precision {r['precision']}; "
                     f"matmul peak {r['matmul_peak_tflops']:.3f} TFLOP/s")
    ratios = modes[1:]
    lines.append(f"  {'':<24}" + "".join(f"{m:>14}" for m in modes)
                 + "".join(f"{m + '/' + modes[0]:>20}" for m in ratios))
    for key, unit in FIGURES.items():
        row = f"  {key:<24}" + "".join(f"{results[m].get(key, float('nan')):>14,.2f}" for m in modes)
        base = first.get(key)
        for mode in ratios:
            value = results[mode].get(key)
            row += f"{value / base:>19.2f}x" if base and value is not None else f"{'-':>20}"
        lines.append(row + f"  {unit}")
    return "\n".join(lines)


def mode_overrides(mode: str) -> list[str]:
    """A bench mode as train.py overrides: ``NAME`` is ``speed=NAME`` in the paper's layout (whatever the
    student's default), ``NAME+shared`` in the shared-input one."""
    speed, _, layout = mode.partition("+")
    if layout not in ("", "shared") or not speed:
        raise SystemExit(f"bench mode {mode!r}: expected a speed config name, optionally +shared (e.g. fast+shared)")
    return [f"speed={speed}", f"++method.shared_input={str(layout == 'shared').lower()}"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    if argv and argv[0] == "--one":
        print(RESULT_MARKER + json.dumps(run(argv[1:])), flush=True)
        return 0
    _, bench = compose_config(argv)
    passed = [a for a in argv if not a.startswith(("bench.modes=", "bench.repeats="))]
    chosen = [a.partition("=")[2] for a in passed if a.startswith("speed=")]
    modes = chosen or [m.strip() for m in str(bench["modes"]).split(",") if m.strip()]
    for mode in modes:
        mode_overrides(mode)  # a bad mode fails before any run
    if any(a.lstrip("+").startswith("method.shared_input=") for a in passed):
        raise SystemExit("the bench modes set the layout: drop method.shared_input=... and name it in the mode "
                         "(bench.modes=fast for the paper's layout, fast+shared for the shared input)")
    passed = [a for a in passed if not a.startswith("speed=")]
    results: dict[str, dict[str, Any]] = {}
    for _ in range(max(1, int(bench["repeats"]))):
        for mode in modes:
            result = run_in_subprocess([*passed, *mode_overrides(mode)])
            if mode not in results or result["train_examples_per_s"] > results[mode]["train_examples_per_s"]:
                results[mode] = result
    print("\n" + format_table(results))
    for mode, result in results.items():
        if result.get("profile"):
            print(f"\n{mode}: {result['profile']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
