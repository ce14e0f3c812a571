"""Validate at the end of fit, whatever ``trainer.val_check_interval`` says.

Lightning validates every ``val_check_interval`` batches and not at the end of training, so a run
shorter than the interval (``trainer.max_steps=30`` with the default 250), or one whose last steps
fall between two validations, ended without the final validation, and with it without a best
checkpoint or ``last.ckpt`` (both are written when validation ends). :class:`ValidateAtEnd` asks
Lightning to stop after the last optimizer step (``max_steps`` reached, or the last batch of the
last epoch), which makes that step a validation step: the checkpoints are then written as at every
other validation. A run whose last step is a validation step anyway validates once, as before.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

__all__ = ["ValidateAtEnd", "is_last_step"]


def is_last_step(trainer: pl.Trainer) -> bool:
    """Whether the optimizer step just taken is the last of ``fit``."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class ValidateAtEnd(pl.Callback):
    """Makes the last training step of ``fit`` a validation step (see the module doc)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_last_step(trainer):
            # Lightning validates after a batch at which the trainer was asked to stop (as for early stopping)
            trainer.should_stop = True
