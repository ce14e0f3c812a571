"""``last.ckpt`` between validations, every N optimizer steps (validations far apart would otherwise lose
every step since the last one): :class:`PeriodicCheckpoint` leaves a step that a validation follows anyway
to the validation-time checkpoint (one write per step), and writes only after the micro-batch that ends an
optimizer step, never with a partly accumulated gradient the checkpoint could not hold."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


def optimizer_step_ended(trainer: pl.Trainer) -> bool:
    """Whether the training batch that just ended completed an optimizer step (the last micro-batch
    of its accumulation window; every epoch holds whole windows: :class:`distill.data.batching.GlobalBatchSampler`)."""
    return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % trainer.accumulate_grad_batches == 0


def validation_follows(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates after the training batch that just ended: a stop was asked for,
    or step-based validation (``check_val_every_n_epoch=None``) is due. Other schedules: False."""
    if not trainer.enable_validation:
        return False
    if trainer.should_stop:
        return True
    every = trainer.val_check_batch
    if trainer.check_val_every_n_epoch is not None or not isinstance(every, int) or every < 1:
        return False
    return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0


class PeriodicCheckpoint(ModelCheckpoint):
    """``every_n_train_steps``, except after the steps that a validation (and its checkpoint) follows."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if optimizer_step_ended(trainer) and not validation_follows(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
