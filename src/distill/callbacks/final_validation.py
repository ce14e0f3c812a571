""":class:`ValidateAtEnd`: the last optimizer step of a fit is a validation step, whatever
``trainer.val_check_interval`` says, so every run ends with a best checkpoint and ``last.ckpt``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class ValidateAtEnd(pl.Callback):
    """Makes the last training step of ``fit`` a validation step (see the module doc)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
        last_step = max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
        last_epoch = max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs
        if last_step or (last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            # Lightning validates after a batch at which the trainer was asked to stop (as for early stopping)
            trainer.should_stop = True
