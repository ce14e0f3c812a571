"""``python eval.py``: score a checkpoint on a split and write its predictions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from distill.models.checkpoints import load_module, run_config_of
from distill.utils.runtime import configure_threads

log = logging.getLogger(__name__)


def overridden(key: str) -> bool:
    """Whether the command line set ``key`` (``key=...``, ``+key=...`` or ``~key``)."""
    return any(o.split("=")[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)


def data_config(cfg: DictConfig) -> DictConfig:
    """The data section: the training run's own, unless the command line chose a data config."""
    run_cfg = None if overridden("data") else run_config_of(cfg.ckpt_path)
    if run_cfg is None:
        return cfg.data
    # command-line data.* overrides still apply on top of the run's data config
    dotlist = [o[len("data."):] for o in HydraConfig.get().overrides.task if o.startswith("data.")]
    data = OmegaConf.merge(run_cfg.data, OmegaConf.from_dotlist(dotlist))
    data.seed = cfg.seed
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    configure_threads(cfg.get("threads"))
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split={cfg.split!r}: eval.py scores 'val' or 'test'")
    output_dir = Path(cfg.paths.output_dir)
    module = load_module(cfg.ckpt_path)
    module.predictions_dir = str(output_dir)
    module.with_rationale = cfg.predictions.with_rationale
    datamodule = hydra.utils.instantiate(
        data_config(cfg), tokenizer=module.tokenizer, targets=module.method, student_kind=module.student.kind,
        shared_input=module.settings.shared_input,
    )
    # the precision the run generated in during its test, unless the command line names one
    chose_precision = overridden("trainer.precision")
    precision = cfg.trainer.precision if chose_precision else module.settings.precision
    log.info("evaluating in precision %s%s", precision, "" if chose_precision else " (the run's own)")
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, precision=precision
    )
    run = trainer.validate if cfg.split == "val" else trainer.test
    metrics = {k: float(v) for k, v in run(module, datamodule=datamodule)[0].items()}
    result = {"ckpt_path": str(cfg.ckpt_path), "split": cfg.split, "precision": str(trainer.precision), "metrics": metrics,
              "predictions": str(output_dir / f"predictions_{cfg.split}.jsonl")}
    (output_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result
