"""The training pipeline behind ``python train.py``: build, fit, test once on the best
checkpoint, write ``results.json`` and print a summary."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from distill.data.batching import BatchPlan
from distill.data.summary import format_summary, test_baselines, validation_note
from distill.callbacks.divergence import Diverged
from distill.methods import get_method
from distill.models.module import DistillModule
from distill.results.identity import read_identity, with_defaults
from distill.utils.precision import normalize
from distill.utils.runtime import configure_threads, peak_memory, resolve_wandb_mode, scrub_secrets
from distill.utils.speed import PLAIN, Speed, native_bf16, resolve_speed
from distill.launch.cluster import auto_precision
from distill.launch.sweep_resume import finished_metric, prepare_job

log = logging.getLogger(__name__)

# The train sampler resumes mid-epoch by itself (GlobalBatchSampler.resume_at, from the restored
# global step), which Lightning cannot see: its warning about non-resumable loaders does not apply.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def runs_on_cuda(cfg: DictConfig) -> bool:
    """Whether the configured trainer will put the student on a CUDA device."""
    import torch

    return torch.cuda.is_available() and str(cfg.trainer.accelerator).lower() in ("auto", "gpu", "cuda")


def build_speed(cfg: DictConfig) -> Speed:
    """``cfg.speed`` (``conf/speed/``) settled for this machine."""
    speed_cfg = cfg.get("speed")
    if speed_cfg is None:
        return PLAIN
    return resolve_speed(OmegaConf.to_container(speed_cfg, resolve=True), runs_on_cuda(cfg))


def build_module(
    cfg: DictConfig, datamodule: Any, student: Any = None, output_dir: str | None = None, speed: Speed = PLAIN
) -> DistillModule:
    """The LightningModule; prefixes, token limits and layout come from the data module."""
    dm = datamodule
    return DistillModule(
        model=cfg.model, student=student, method=cfg.method.name, rationale_weight=cfg.method.rationale_weight,
        alpha=cfg.method.alpha, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"),
        label_prefix=dm.task_prefixes["label"], rationale_prefix=dm.task_prefixes["rationale"],
        max_input_length=dm.max_input_length, label_max_new_tokens=dm.label_budget,
        rationale_max_new_tokens=dm.max_rationale_length,
        predictions_dir=output_dir if cfg.predictions.write else None, with_rationale=cfg.predictions.with_rationale,
        speed=speed.as_dict(), shared_input=dm.shared_input, rationale_position=dm.rationale_position,
    )


def build_datamodule(
    cfg: DictConfig, tokenizer: Any, student_kind: str = "seq2seq"
) -> pl.LightningDataModule:
    """The data module of ``cfg.data``, its batches laid out for a ``seq2seq`` or ``causal`` student
    (and, with ``method.shared_input``, in the shared-input layout)."""
    return hydra.utils.instantiate(
        cfg.data,
        tokenizer=tokenizer,
        student_kind=student_kind,
        shared_input=bool(cfg.method.get("shared_input", False)),
        _recursive_=False,
    )


def keep_csv_history(metrics_file: Path) -> Path | None:
    """Before a resumed run's CSVLogger starts (it deletes the ``metrics.csv`` it finds), move the
    earlier process's file to ``metrics.part<k>.csv`` (k = 1, 2, ... in order): read in order, the
    parts and the new ``metrics.csv`` hold the whole run's curve (steps logged after the last
    checkpoint appear twice: once in the part, once after the resume)."""
    if not metrics_file.is_file():
        return None
    k = 1
    while (part := metrics_file.with_name(f"metrics.part{k}.csv")).exists():
        k += 1
    metrics_file.rename(part)
    return part


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not isinstance(logger_cfg, DictConfig) or "_target_" not in logger_cfg:
            continue
        kwargs: dict[str, Any] = {}
        if logger_cfg._target_.endswith("WandbLogger"):
            kwargs["mode"] = resolve_wandb_mode(logger_cfg.get("mode"))
            if logger_cfg.save_dir:
                Path(logger_cfg.save_dir).mkdir(parents=True, exist_ok=True)
        if logger_cfg._target_.endswith("CSVLogger") and cfg.get("ckpt_path"):
            # a resumed run keeps what its earlier process logged
            log_dir = Path(logger_cfg.save_dir) / str(logger_cfg.get("name") or "") / str(logger_cfg.get("version") or "")
            keep_csv_history(log_dir / "metrics.csv")
        loggers.append(hydra.utils.instantiate(logger_cfg, **kwargs))
    return loggers


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [
        hydra.utils.instantiate(cb)
        for cb in (cfg.get("callbacks") or {}).values()
        if isinstance(cb, DictConfig) and "_target_" in cb
    ]


def choose_precision(cfg: DictConfig, speed: Speed = PLAIN) -> tuple[str, str]:
    """The precision the run trains in and why, decided by the config and the hardware's features,
    never by a timing: ``trainer.precision`` as set, or for ``auto`` bf16-mixed on a GPU with bf16 and
    on a CPU where ``speed.cpu_bf16`` is on (its ``auto``: a CPU with native bf16, AMX or AVX512-BF16),
    else 32-true."""
    configured = str(cfg.trainer.precision)
    if configured != "auto":
        if "bf16" in configured and not runs_on_cuda(cfg) and native_bf16() is None:
            if cfg.get("refuse_emulated_bf16", False):
                raise SystemExit(f"trainer.precision={configured} on a CPU without native bf16 (no AMX or AVX512-BF16): "
                                 "this recipe runs only where bf16 is native (refuse_emulated_bf16)")
            log.warning("trainer.precision=%s on a CPU without native bf16 (no AMX or AVX512-BF16): bf16 is "
                        "emulated here and runs many times slower than fp32", configured)
        return normalize(configured), f"trainer.precision={configured}"
    if runs_on_cuda(cfg):
        precision = auto_precision("bf16-mixed")
        return precision, f"trainer.precision=auto: the GPU {'has' if precision != '32-true' else 'lacks'} bf16"
    chosen = "bf16-mixed" if speed.cpu_bf16 else "32-true"
    lever = str((cfg.get("speed") or {}).get("cpu_bf16", False)).lower()
    if lever != "auto":
        return chosen, f"trainer.precision=auto, speed.cpu_bf16={lever}"
    native = native_bf16()
    return chosen, f"trainer.precision=auto: {'native bf16 on this CPU (' + native + ')' if native else 'no native bf16 on this CPU'}"


def build_trainer(cfg: DictConfig, speed: Speed = PLAIN, datamodule: Any = None, **kwargs: Any) -> pl.Trainer:
    """The Trainer from ``cfg.trainer`` in the precision of :func:`choose_precision` (unless ``kwargs``
    name one), connected with ``datamodule`` (when given) to the run's batch plan: :func:`connect_batch_plan`."""
    kwargs.setdefault("precision", choose_precision(cfg, speed)[0])
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, **kwargs)
    connect_batch_plan(trainer, datamodule, BatchPlan.of(cfg.data.batch_size, trainer.world_size,
                                                         cfg.data.micro_batch_size))
    return trainer


def connect_batch_plan(trainer: pl.Trainer, datamodule: Any, plan: BatchPlan) -> None:
    """Hand the run's :class:`BatchPlan` (``data.batch_size``, global, over the trainer's processes; made
    once, by :func:`build_trainer`) to the trainer, which accumulates as it says, and to ``datamodule``
    (when given), which samples as it says. Every step count the config sets (``val_check_interval``,
    ``max_steps``, periodic checkpoints, logging) counts optimizer steps whatever the accumulation:
    Lightning counts the validation interval in micro-batches, so it is scaled here, and validation (with
    its checkpoints) falls on an optimizer-step boundary."""
    accumulate = plan.accumulate_grad_batches
    trainer.accumulate_grad_batches = accumulate
    interval = trainer.val_check_interval
    if accumulate > 1 and interval is not None:
        if isinstance(interval, int):
            trainer.val_check_interval = interval * accumulate
        elif interval != 1.0:
            raise ValueError(f"trainer.val_check_interval={interval} with gradient accumulation ({accumulate} "
                             "micro-batches per step): give it in optimizer steps (an int)")
    if datamodule is not None:
        datamodule.connect(plan)


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def run_config_summary(cfg: DictConfig, trainer: pl.Trainer, plan: BatchPlan,
                       precision_reason: str | None = None) -> dict[str, Any]:
    """``results.json``'s ``config``: the run identity (:mod:`distill.results.identity`, the fields
    the results package reads back) and how this run laid out its batches and precision (and why)."""
    micro, accumulate = plan.micro_batch_size, plan.accumulate_grad_batches
    return {
        **with_defaults(read_identity(cfg)),
        "micro_batch_size": micro,
        "accumulate_grad_batches": accumulate,
        "world_size": trainer.world_size,
        # what the run trained and tested in: eval.py, distill.predict and distill.export use the
        # same, read from the checkpoint
        "precision": normalize(trainer.precision),
        **({"precision_reason": precision_reason} if precision_reason else {}),
    }


def format_peak_memory(peak: dict[str, int]) -> str:
    """``peak RSS 3.21 GB`` (and ``, CUDA 1.10 GB``) from :func:`distill.utils.runtime.peak_memory`."""
    parts = [f"peak {'RSS' if key == 'rss' else key.upper()} {value / 1e9:.2f} GB" for key, value in peak.items()]
    return ", ".join(parts) or "-"


def format_run_summary(results: dict[str, Any]) -> str:
    c, m = results["config"], results["metrics"]

    def fmt(key: str) -> str:
        value = m.get(key)
        return "-" if value is None else f"{value:.4f}"

    # a LoRA student trains its adapter alone
    trainable = results.get("num_trainable_parameters", results["num_parameters"])
    trainable = f", {trainable:,} trainable" if trainable != results["num_parameters"] else ""

    lines = [
        f"benchmark   {c['benchmark']}  (label source: {c['label_source']}, train fraction {c['fraction']})",
        f"method      {c['method']}"
        + (f"  (lambda={c['rationale_weight']})" if get_method(c["method"]).rationale_task and c["alpha"] is None
           else "")
        + (f"  (alpha={c['alpha']})" if c["alpha"] is not None else "")
        + ("  shared input (x once for both tasks)" if c.get("shared_input") else ""),
        f"student     {c['model']}  ({results['num_parameters'] / 1e6:.1f}M parameters{trainable})"
        f"{'  precision ' + c['precision'] if c.get('precision') else ''}"
        f"{'  [' + c['precision_reason'] + ']' if c.get('precision_reason') else ''}",
        f"batches     global {c['global_batch_size']} = {c['world_size']} process(es) x {c['micro_batch_size']}"
        f" x {c['accumulate_grad_batches']} accumulation; {results['global_step']} optimizer steps",
        f"time        {results['wall_seconds']:.0f}s in all, {results['train_seconds']:.0f}s training",
        f"memory      {format_peak_memory(results.get('peak_memory') or {})}",
        f"val/acc     best {fmt('val/acc_best')}"
        + (f"   ({results['validation']})" if results.get("validation") else ""),
        f"test/acc    {fmt('test/acc')}   (majority-class baseline {fmt('test/majority_baseline')}"
        + (f", teacher {fmt('test/teacher_acc')})" if "test/teacher_acc" in m else ")"),
        f"outputs     {results['output_dir']}",
    ]
    if results.get("validation_note"):
        lines.insert(lines.index(next(line for line in lines if line.startswith("val/acc"))) + 1,
                     f"            {results['validation_note']}")
    if results.get("status", "ok") != "ok":
        lines.insert(0, f"STATUS      {results['status'].upper()}: {results.get('error', '')}")
    width = max(len(line) for line in lines)
    bar = "-" * width
    return "\n".join([bar, "distill run summary".center(width), bar, *lines, bar])


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> float | None:
    """Train (and test) as configured; returns ``cfg.optimized_metric`` for sweepers."""
    started = time.time()
    job = prepare_job(cfg)  # a rerun sweep: skip a finished job, resume one from last.ckpt (distill.launch.sweep_resume)
    if job.skipped:
        return finished_metric(job, cfg)
    configure_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    speed = build_speed(cfg)
    student = hydra.utils.instantiate(cfg.model)
    datamodule = build_datamodule(cfg, student.tokenizer, student.kind)
    module = build_module(cfg, datamodule, student, str(output_dir), speed)
    loggers = build_loggers(cfg)
    precision, precision_reason = choose_precision(cfg, speed)
    log.info("precision %s (%s)", precision, precision_reason)
    trainer = build_trainer(cfg, speed, datamodule, callbacks=build_callbacks(cfg), logger=loggers or False,
                            precision=precision)
    validation = validation_note(datamodule, cfg.trainer.get("limit_val_batches"))
    if validation:
        log.warning("%s", validation)
    if trainer.is_global_zero:
        print(format_summary(datamodule), flush=True)  # with the batch plan of this run
    plain_cfg = scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(plain_cfg)

    train_seconds = 0.0
    diverged: Diverged | None = None
    if cfg.train:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except Diverged as error:
            diverged = error
        train_seconds = module.train_seconds()  # a resumed run's includes its earlier processes'

    metrics = _metrics(trainer)
    if cfg.test and diverged is None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt = best or (None if cfg.train else cfg.get("ckpt_path"))
        if cfg.train and not best:
            log.warning("no best checkpoint was saved; testing the weights in memory")
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(_metrics(trainer))
        metrics.update(test_baselines(datamodule))

    results = {
        "status": "ok" if diverged is None else "diverged",
        "config": run_config_summary(cfg, trainer, datamodule.batch_plan, precision_reason),
        "metrics": metrics,
        "global_step": trainer.global_step,
        "num_parameters": module.student.num_parameters,
        "num_trainable_parameters": module.student.num_trainable_parameters,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - started,
        "peak_memory": peak_memory(),
        "output_dir": str(output_dir),
        "validation": datamodule.splits.sources.get("val"),
        **({"validation_note": validation} if validation else {}),
        "best_checkpoint": trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None,
    }
    if diverged is not None:
        results["error"] = str(diverged)
        results["diverged_at_step"] = diverged.step
    if trainer.is_global_zero:
        if diverged is None and cfg.test and not cfg.get("keep_checkpoints", True):
            shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
            results["best_checkpoint"] = None  # tested, then deleted (keep_checkpoints: false)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("\n" + format_run_summary(results), flush=True)
    for logger in loggers:
        logger.finalize("success" if diverged is None else "failed")
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish(exit_code=0 if diverged is None else 1)
    if diverged is not None:
        log.error("%s (results.json: status diverged; checkpoints up to the last good step kept)", diverged)
        if _in_multirun():
            raise diverged  # a failed job to Hydra: the sweep goes on with the others
        raise SystemExit(1)
    return metrics.get(cfg.get("optimized_metric") or "")
