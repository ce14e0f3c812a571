"""The LightningModule: one student (seq2seq or causal), the paper's losses, label-only evaluation. It does
not branch on the student's kind: the losses and generation read it from the model, the data module lays
its batches out for it, and :class:`InferenceSettings` records it for exported students."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.distributed.fsdp import FullyShardedDataParallel
from torchmetrics import MaxMetric

from distill.methods import get_method
from distill.models.attention import attention_implementation
from distill.models.inference import (InferenceSettings, generate_from_ids, generate_from_texts, labels_from_outputs,
                                      task_inputs)
from distill.models.losses import (combine_losses, fast_losses_agree, plain_task_loss, shared_losses_agree,
                                   shared_task_losses, task_losses, unshared_task_losses)
from distill.models.student import Student, architecture_of, load_student
from distill.utils.precision import DEFAULT_PRECISION, generation_autocast, normalize
from distill.utils.speed import PLAIN, Speed

log = logging.getLogger(__name__)

#: what an ``optimizer``/``scheduler`` of None means: conf/optimizer/adamw.yaml, conf/scheduler/linear.yaml
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 5e-5, "weight_decay": 0.0,
                     "betas": (0.9, 0.999), "eps": 1e-8}
DEFAULT_SCHEDULER = {"_target_": "transformers.get_scheduler", "_partial_": True, "name": "linear", "warmup_ratio": 0.0}

# EncoderDecoderModel warns on every use of `labels` that versions before 4.12 computed the loss
# elsewhere; it concerns checkpoints trained with those versions, not ours.
warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way to train encoder-decoder")


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class DistillModule(pl.LightningModule):
    """Holds the student; computes the label and rationale losses each step; generates and scores labels.

    ``model``: the student spec (``conf/model/``, kept so a checkpoint rebuilds itself); ``method``: a
    :data:`distill.methods.METHODS` name; ``rationale_weight``/``alpha``: :func:`combine_losses`';
    ``optimizer``/``scheduler``: ``_partial_`` configs (``conf/optimizer/``, ``conf/scheduler/``, whose
    ``warmup_ratio`` of the run's steps becomes ``num_warmup_steps``); the prefixes, lengths, ``shared_input``
    and ``rationale_position``: how inputs are laid out and outputs parsed (:class:`InferenceSettings`);
    ``speed``: the resolved levers (:class:`Speed` fields; none: plain); ``predictions_dir``: where
    ``predictions_{split}.jsonl`` go (None: nowhere), with rationales where ``with_rationale``."""

    def __init__(
        self, model: Mapping[str, Any], method: str = "step_by_step", rationale_weight: float = 1.0,
        alpha: float | None = None, optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        label_prefix: str = "[label] ", rationale_prefix: str = "[rationale] ", max_input_length: int = 512,
        label_max_new_tokens: int = 32, rationale_max_new_tokens: int = 128,
        predictions_dir: str | None = None, with_rationale: bool = False, speed: Mapping[str, Any] | None = None,
        student: Student | None = None, shared_input: bool = False, rationale_position: str = "before",
    ) -> None:
        super().__init__()
        #: what the method trains on and generates (:attr:`method` is its name)
        self.method_spec = get_method(method)
        model = _plain(model)
        optimizer = dict(_plain(optimizer) or DEFAULT_OPTIMIZER)
        scheduler = dict(_plain(scheduler) or DEFAULT_SCHEDULER)
        self.save_hyperparameters(ignore=["student"])
        spec = {k: v for k, v in model.items() if k != "_target_"}
        self.student = student or load_student(**spec)
        self.model = self.student.model
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it finds
        self.tokenizer = self.student.tokenizer
        self.rationale_weight = rationale_weight
        self.alpha = alpha
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        self.settings = InferenceSettings(
            method=method, label_prefix=label_prefix, rationale_prefix=rationale_prefix,
            max_input_length=max_input_length, label_max_new_tokens=label_max_new_tokens,
            rationale_max_new_tokens=rationale_max_new_tokens, kind=self.student.kind,
            shared_input=bool(shared_input) and self.method_spec.rationale_task, rationale_position=rationale_position,
        )
        self.predictions_dir = predictions_dir
        self.with_rationale = with_rationale
        self.speed = Speed.of(_plain(speed)) if speed else PLAIN
        self._first_batch_checked = False
        self._shared_pass = True  # False once the first batch showed the model cannot take the branch mask
        # the best validation accuracy so far (logged as val/acc_best, kept in checkpoints); every rank
        # holds the same gathered accuracy, so no synchronisation is needed
        self.val_acc_best = MaxMetric(sync_on_compute=False)
        self._eval_records: list[dict[str, Any]] = []
        self.last_losses: dict[str, torch.Tensor] = {}
        self._architecture: dict[str, Any] | None = None
        #: the precision the run trains in (set by :meth:`setup`; ``settings.precision`` is generation's)
        self.run_precision = DEFAULT_PRECISION
        #: seconds the processes before a resume trained (from the checkpoint); this process's fit began then
        self.train_seconds_before, self._fit_started = 0.0, time.time()

    @property
    def method(self) -> str:
        """The method's name (what hparams, exports and callbacks hold); setting it sets :attr:`method_spec`."""
        return self.method_spec.name

    @method.setter
    def method(self, name: str) -> None:
        self.method_spec = get_method(name)

    # ------------------------------------------------------------------ training
    def _tasks(self, batch: Mapping[str, Any]) -> dict[str, Mapping[str, torch.Tensor]]:
        """The task batches this method trains on."""
        tasks = {"label": batch["label"]}
        if self.method_spec.rationale_task and "rationale" in batch:
            tasks["rationale"] = batch["rationale"]
        return tasks

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``loss`` (:func:`combine_losses`), ``loss_label`` and, where the method learns rationales, ``loss_rationale``."""
        target_only = self.speed.target_only_logits
        if "shared" in batch:
            per_task = (shared_task_losses(self.model, batch, target_only) if self._shared_pass
                        else unshared_task_losses(self.model, batch, self.tokenizer.pad_token_id))
        elif target_only:
            per_task = task_losses(self.model, self._tasks(batch))
        else:
            per_task = {name: plain_task_loss(self.model, task) for name, task in self._tasks(batch).items()}
        losses = {
            "loss": combine_losses(per_task["label"], per_task.get("rationale"), self.rationale_weight, self.alpha),
            "loss_label": per_task["label"],
        }
        if "rationale" in per_task:
            losses["loss_rationale"] = per_task["rationale"]
        return losses

    def check_first_batch(self, batch: Mapping[str, Any]) -> None:
        """Once per fit, on its first batch: the one pass over x (shared-input layout) must give the
        separate passes' losses, target-only logits the student's own; else the module computes
        them that way from here on."""
        if "shared" in batch:
            problem = shared_losses_agree(self.model, batch, self.tokenizer.pad_token_id, self.speed.target_only_logits)
            if problem:
                log.warning("shared_input: one pass over x disagrees with separate passes (%s); computing each "
                            "task's pass apart (same layout, no speed-up)", problem)
                self._shared_pass = False
        elif self.speed.target_only_logits and (problem := fast_losses_agree(self.model, self._tasks(batch))):
            log.warning("speed: target-only losses disagree with the student's own (%s); computing losses the "
                        "plain way", problem)
            self.speed = replace(self.speed, target_only_logits=False)

    def on_fit_start(self) -> None:
        self._fit_started = time.time()
        self._first_batch_checked = False
        self._shared_pass = True

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        with attention_implementation(self.model, "eager" if self.speed.eager_attention else None):
            if not self._first_batch_checked:
                self.check_first_batch(batch)
                self._first_batch_checked = True
            losses = self.compute_losses(batch)
        self.last_losses = {name: value.detach() for name, value in losses.items()}  # read by StopOnDivergence
        size = len(batch["uid"])
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=size)
        return losses["loss"]

    # ------------------------------------------------------------------ generation and evaluation
    def predict_labels(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[str], list[str | None]]:
        """Labels (and, where the label holds it, the rationale) for a label-task batch, generated in
        ``settings.precision``."""
        _, marker, _ = task_inputs(self.settings, self.tokenizer, "label")
        with generation_autocast(self.settings.precision, input_ids.device.type):
            texts = generate_from_ids(self.model, self.tokenizer, input_ids, attention_mask,
                                      self.settings.label_max_new_tokens, marker)
        return labels_from_outputs(texts, self.method_spec, self.settings.rationale_position)

    def generate_rationales(self, inputs: list[str]) -> list[str]:
        prefix, marker, limit = task_inputs(self.settings, self.tokenizer, "rationale")
        with generation_autocast(self.settings.precision, self.device.type):
            return generate_from_texts(self.model, self.tokenizer, inputs, prefix, limit,
                                       self.settings.rationale_max_new_tokens, max(len(inputs), 1), marker)

    def _eval_step(self, batch: Mapping[str, Any]) -> None:
        task = batch["label"]
        predictions, rationales = self.predict_labels(task["input_ids"], task["attention_mask"])
        if self.with_rationale and self.method_spec.rationale_task and self.trainer.testing:
            rationales = self.generate_rationales(batch["input"])
        benchmark = self.trainer.datamodule.benchmark
        for uid, text, gold, pred, rationale in zip(batch["uid"], batch["input"], batch["gold"], predictions, rationales):
            self._eval_records.append({
                "uid": uid, "input": text, "gold": gold, "prediction": pred,
                "correct": gold is not None and benchmark.score_as_written(pred, gold, self.tokenizer),
                **({"rationale": rationale} if rationale is not None else {})})

    def _eval_epoch_end(self, split: str) -> float:
        """The split's accuracy over every rank's records (each example once), its predictions written."""
        records, self._eval_records = self._eval_records, []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            seen: dict[str, Any] = {}
            for record in (record for part in gathered for record in part):
                seen.setdefault(record["uid"], record)
            records = list(seen.values())
        scored = [r for r in records if r["gold"] is not None]
        acc = sum(r["correct"] for r in scored) / len(scored) if scored else float("nan")
        if self.predictions_dir and self.trainer.is_global_zero and (split == "test" or not self.trainer.sanity_checking):
            path = Path(self.predictions_dir) / f"predictions_{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as f:
                for record in sorted(records, key=lambda r: r["uid"]):
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return acc

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        acc = self._eval_epoch_end("val")
        if self.trainer.sanity_checking:
            return
        if not math.isnan(acc):
            self.val_acc_best.update(acc)
        # every rank holds the same gathered figure, so no further reduction is needed
        self.log("val/acc", acc, prog_bar=True, rank_zero_only=False)
        self.log("val/acc_best", self.best_val_acc, prog_bar=True)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self._eval_epoch_end("test"))

    # ------------------------------------------------------------------ state
    def setup(self, stage: str) -> None:
        """The trainer's precision becomes the run's and generation's: checkpoints and exports carry both."""
        self.run_precision = normalize(self.trainer.precision)
        self.settings = self.settings.in_precision(self.run_precision)

    @property
    def best_val_acc(self) -> float:
        """The best validation accuracy so far (``-inf`` before the first)."""
        return float(self.val_acc_best.max_value)

    def train_seconds(self) -> float:
        """The run's training time so far, summed over every process that trained it."""
        return self.train_seconds_before + time.time() - self._fit_started

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(best_val_acc=self.best_val_acc, precision=self.run_precision,
                          generation_precision=self.settings.precision, train_seconds=self.train_seconds())
        if self._architecture is None:  # the tokenizer and config do not change during a run
            self._architecture = architecture_of(self.student)
        checkpoint["student_architecture"] = self._architecture

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best.reset()
        if math.isfinite(best := float(checkpoint.get("best_val_acc", float("-inf")))):
            self.val_acc_best.update(best)
        self.train_seconds_before = float(checkpoint.get("train_seconds", 0.0))
        if getattr(self, "_trainer", None) is None:  # loaded for inference: decode as the run did (older
            # checkpoints: generation in the run's precision; older still: 32-true)
            self.run_precision = normalize(checkpoint.get("precision", DEFAULT_PRECISION))
            self.settings = self.settings.in_precision(checkpoint.get("generation_precision", self.run_precision))

    # ------------------------------------------------------------------ optimisation
    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """``trainer.gradient_clip_val`` applied where Lightning's own clipping refuses to: under FSDP
        (sharded gradients need the root module's ``clip_grad_norm_``) and with a fused optimizer
        under bf16 autocast (no loss scaler, so the gradients are already true and can be clipped
        as in full precision). Everything else is Lightning's."""
        if not gradient_clip_val:
            return
        norm = (gradient_clip_algorithm or "norm") == "norm"
        root = self.trainer.strategy.model
        if norm and isinstance(root, FullyShardedDataParallel):
            root.clip_grad_norm_(gradient_clip_val)
            return
        if optimizer.defaults.get("fused") and not self._has_loss_scaler():
            clip = torch.nn.utils.clip_grad_norm_ if norm else torch.nn.utils.clip_grad_value_
            clip([p for group in optimizer.param_groups for p in group["params"]], gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _has_loss_scaler(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None

    def configure_optimizers(self) -> dict[str, Any]:
        """``optimizer`` over two parameter groups (no weight decay on biases and norms), its lr stepped
        every optimizer step by ``scheduler`` over ``trainer.max_steps`` (else the estimated steps)."""
        spec = dict(self.optimizer_cfg)
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        groups = [{"params": decay, "weight_decay": spec.get("weight_decay", 0.0)},
                  {"params": no_decay, "weight_decay": 0.0}]
        extra: dict[str, Any] = {"betas": tuple(spec.pop("betas"))} if "betas" in spec else {}  # a tuple, as torch keeps it
        if self.speed.fused_optimizer and not self._has_loss_scaler():
            # one kernel for all parameters (else torch's default: a per-tensor loop on CPU); not under
            # an fp16 loss scaler: the gradients must be unscaled before clipping
            extra["fused"] = True
        optimizer = hydra.utils.instantiate(spec, _convert_="all")(groups, **extra)
        max_steps = self.trainer.max_steps
        total = max(int(max_steps if max_steps and max_steps > 0 else self.trainer.estimated_stepping_batches), 1)
        schedule = dict(self.scheduler_cfg)
        warmup = int(schedule.pop("warmup_ratio", 0.0) * total)
        scheduler = hydra.utils.instantiate(schedule, _convert_="all")(
            optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
