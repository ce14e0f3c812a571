""":class:`ValidateAtEnd`: the last optimizer step of a fit is a validation step, whatever
``trainer.val_check_interval`` says, so every run ends with a best checkpoint and ``last.ckpt``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


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
