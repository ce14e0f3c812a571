"""Random generator states (torch CPU and CUDA, numpy, Python) kept across a run and in every checkpoint:
:class:`RNGState` puts the training stream back before every training batch (what runs between batches
never moves it) and restores each rank's saved states after a resume, so a resumed run is the run that
would have happened. Stored as tensors and plain numbers (``torch.load(weights_only=True)`` reads them)."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def capture_rng_states() -> dict[str, Any]:
    """torch (CPU, and every CUDA device once CUDA is in use), numpy and Python ``random`` states."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            log.warning("restoring %d saved CUDA generator states on %d devices", len(cuda), torch.cuda.device_count())
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    n = states["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


def _gather(local: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``local``, in rank order (all ranks must call this together)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return gathered


class RNGState(pl.Callback):
    """Keeps the training steps' random stream apart from everything else, and in the checkpoints."""

    def __init__(self) -> None:
        self._after_last_batch: dict[str, Any] | None = None  # the states as the last training batch left them
        self._resumed: list[dict[str, Any]] | None = None  # every rank's states, from the checkpoint resumed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._after_last_batch = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._resumed is not None:
            ranks, self._resumed = self._resumed, None
            if len(ranks) != trainer.world_size:
                log.warning("the checkpoint holds random states of %d process(es), this run has %d: the resumed "
                            "run's random stream differs from the saved run's", len(ranks), trainer.world_size)
            if trainer.global_rank < len(ranks):
                self._after_last_batch = ranks[trainer.global_rank]
        if self._after_last_batch is not None:
            restore_rng_states(self._after_last_batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._after_last_batch = capture_rng_states()

    def state_dict(self) -> dict[str, Any]:
        local = self._after_last_batch if self._after_last_batch is not None else capture_rng_states()
        return {"ranks": _gather(local)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed = list(state_dict["ranks"])
