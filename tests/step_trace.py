"""Per optimizer step, the examples a run consumed and its loss, one JSON line each in
``<trainer.default_root_dir>/step_trace.jsonl`` (global rank 0): ``step``, ``uids`` (sorted), ``loss`` (the
mean over every rank's micro-batches), ``micro_batches``, ``world_size``, ``environment``, ``auto_requeue``.
The proof that a global batch means the same on 1 or N processes (``tests/test_ddp.py``), and that a resumed
run trains the steps it should on the examples it should; enable it with
``+callbacks.step_trace._target_=step_trace.StepTrace`` (``tests/`` on the path: :func:`train_utils.subprocess_env`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class StepTrace(pl.Callback):
    """Writes the uids and the mean loss of every optimizer step (see the module doc)."""

    def __init__(self, path: str | None = None, loss_key: str = "loss") -> None:
        self.path = path
        self.loss_key = loss_key
        self._uids: list[str] = []
        self._losses: list[float] = []
        self._micro = 0
        self._last_step = 0
        self._file: Path | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._file = Path(self.path) if self.path else Path(trainer.default_root_dir) / "step_trace.jsonl"
        if trainer.is_global_zero:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            if trainer.global_step == 0:  # a fresh run starts a fresh file; a resumed one appends
                self._file.write_text("")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        uids = batch.get("uid") if isinstance(batch, dict) else None
        if uids is None:
            raise KeyError("StepTrace needs a 'uid' list in every training batch")
        self._uids.extend(str(u) for u in uids)
        loss = outputs.get(self.loss_key) if isinstance(outputs, dict) else outputs
        if loss is not None:
            # Lightning hands over the loss divided by the accumulation factor (what it backpropagates)
            scale = max(int(trainer.accumulate_grad_batches or 1), 1)
            self._losses.append(float(torch.as_tensor(loss).detach().float().cpu()) * scale)
        self._micro += 1
        if trainer.global_step != self._last_step:  # the optimizer stepped on this batch
            self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        local = {"uids": self._uids, "losses": self._losses, "micro": self._micro}
        parts: list[Any] = [local]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, local)
        if trainer.is_global_zero and self._file is not None:
            environment = trainer._accelerator_connector.cluster_environment
            losses = [x for part in parts for x in part["losses"]]
            record = {
                "step": trainer.global_step,
                "uids": sorted(u for part in parts for u in part["uids"]),
                "loss": sum(losses) / len(losses) if losses else None,
                "micro_batches": sum(part["micro"] for part in parts),
                "world_size": trainer.world_size,
                # who started the processes: SLURMEnvironment under srun, LightningEnvironment otherwise
                "environment": type(environment).__name__,
                "auto_requeue": getattr(environment, "auto_requeue", None),
            }
            with self._file.open("a") as f:
                f.write(json.dumps(record) + "\n")
        self._uids, self._losses, self._micro = [], [], 0
        self._last_step = trainer.global_step


def read_step_trace(path: str | Path) -> list[dict[str, Any]]:
    """The records of a :class:`StepTrace` file, in step order. Bad lines name file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON line ({error.msg})") from None
    return sorted(records, key=lambda r: r["step"])
