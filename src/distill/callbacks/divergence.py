""":class:`StopOnDivergence` checks the loss before every backward pass, the gradient norm before every
optimizer step and the weights after it (before that step's checkpoints are written); a non-finite one
raises :class:`Diverged` (``train.py`` records ``"status": "diverged"`` and exits non-zero), or only logs
with ``action=warn``. Under an fp16 loss scaler a non-finite step is one the scaler skips, not divergence,
until ``max_skipped_steps`` come in a row."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """A run's loss, gradients or weights became non-finite at optimizer step ``step``."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"training diverged at step {step}: {what}")
        self.step = step


def _describe(losses: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{name}={float(value):.4g}" for name, value in losses.items())


def _global_norm(tensors: list[torch.Tensor]) -> float | None:
    if not tensors:
        return None
    return float(torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(tensors)])))


class StopOnDivergence(pl.Callback):
    """See the module doc. ``check_gradients`` / ``check_weights``: also check the global norm of
    the gradients / the weights (one ``torch._foreach_norm`` each per step)."""

    def __init__(
        self, action: str = "stop", check_gradients: bool = True, check_weights: bool = True,
        max_skipped_steps: int = 25,
    ) -> None:
        if action not in ("stop", "warn"):
            raise ValueError(f"callbacks.stop_on_divergence.action={action!r}: expected 'stop' or 'warn'")
        self.action = action
        self.check_gradients = check_gradients
        self.check_weights = check_weights
        self.max_skipped_steps = max_skipped_steps
        self._skipped_in_a_row = 0

    def _non_finite(self, trainer: pl.Trainer, what: str, step: int | None = None, skippable: bool = True) -> None:
        """Raise (or warn) for ``step`` (default: the step being computed); a ``skippable`` one is
        left to a loss scaler until too many come in a row."""
        step = trainer.global_step + 1 if step is None else step
        if skippable and getattr(trainer.precision_plugin, "scaler", None) is not None:
            self._skipped_in_a_row += 1
            if self._skipped_in_a_row <= self.max_skipped_steps:
                return  # the scaler skips this step and lowers its scale
            what += f" ({self._skipped_in_a_row} steps in a row under the loss scaler)"
        if self.action == "warn":
            log.warning("training diverged at step %d: %s; going on (action=warn)", step, what)
            return
        raise Diverged(step, what)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss.detach()).all():
            if not self.check_gradients:
                self._skipped_in_a_row = 0
            return
        terms = getattr(pl_module, "last_losses", None) or {"loss": loss.detach()}
        bad = {name: value for name, value in terms.items() if not math.isfinite(float(value))}
        self._non_finite(trainer, f"non-finite loss ({_describe(bad or terms)})")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.check_gradients:
            return
        norm = _global_norm([p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None])
        if norm is None or math.isfinite(norm):
            self._skipped_in_a_row = 0
            return
        terms = getattr(pl_module, "last_losses", None) or {}
        self._non_finite(trainer, f"non-finite gradient norm ({norm}) with losses {_describe(terms)}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.check_weights:
            return
        norm = _global_norm([p.detach() for p in pl_module.parameters() if p.requires_grad])
        if norm is not None and not math.isfinite(norm):
            terms = getattr(pl_module, "last_losses", None) or {}
            # not a skippable step: the update is in the weights (its checkpoint is not written)
            self._non_finite(trainer, f"non-finite weights after its update (losses {_describe(terms)})",
                             step=trainer.global_step, skippable=False)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_in_a_row": self._skipped_in_a_row}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._skipped_in_a_row = int(state_dict.get("skipped_in_a_row", 0))
