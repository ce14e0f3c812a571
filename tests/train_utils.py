"""Composing and running ``conf/train.yaml`` in-process for tests (no Hydra app, no subprocess)."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]

#: a run that takes seconds: the tiny T5, a handful of steps, a batch or two of evaluation
QUICK = [
    "model=tiny",
    "logger=csv",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "optimizer.lr=1e-3",
]


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    import distill  # noqa: F401  (registers the resolvers conf/ uses)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=[*overrides, f"paths.output_dir={output_dir}"])


def module_and_train_batch(
    student: dict, speed=None, method: str = "step_by_step", batch_size: int = 8, with_datamodule: bool = False,
    shared_input: bool = False,
):
    """A DistillModule for ``student`` (a ``conf/model`` spec) in eval mode (no dropout) and one
    train batch of arith laid out for its kind (and the data module; ``shared_input``: in that
    layout); every arith example carries a rationale."""
    from distill.data import DistillDataModule
    from distill.models.module import DistillModule

    module = DistillModule(model=student, method=method, speed=speed.as_dict() if speed else None,
                           shared_input=shared_input)
    module.eval()  # no dropout: both computations must see the same function
    dm = DistillDataModule(
        benchmark={"_target_": "distill.benchmarks.arith.Arith", "train_size": 16, "val_size": 4, "test_size": 4},
        data_dir=".",
        tokenizer=module.tokenizer,
        split_files={"train": "train", "val": "val", "test": "test"},
        targets=method,
        batch_size=batch_size,
        cache_dir=None,
        student_kind=module.student.kind,
        shared_input=shared_input,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    if method == "step_by_step" and not shared_input:
        assert "rationale" in batch, "arith examples all carry rationales"
    return (module, batch, dm) if with_datamodule else (module, batch)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``train.py``/``python -m distill...`` subprocess: one quiet thread,
    offline W&B and hub, this checkout's ``src`` first on the path, then ``tests`` (the test callbacks:
    ``step_trace.StepTrace``)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env



class Killed(RuntimeError):
    """What :class:`KillAtStep` raises: the run died there."""


class KillAtStep(pl.Callback):
    """Kills the run as optimizer step ``step`` starts (the steps before it are done), as a
    pre-emption would: ``+callbacks.kill._target_=train_utils.KillAtStep +callbacks.kill.step=N``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 >= self.step:
            raise Killed(f"killed as step {self.step} started")


class SigkillAtStep(pl.Callback):
    """SIGKILLs this process (the whole sweep with it) as optimizer step ``step`` starts, when the
    environment variable ``KILL_TAG`` equals ``tag``: the config is the same whether or not it
    kills (``+callbacks.kill._target_=train_utils.SigkillAtStep +callbacks.kill.step=N
    '+callbacks.kill.tag=${seed}'``, then run with ``KILL_TAG=<seed>``)."""

    def __init__(self, step: int, tag: str) -> None:
        self.step = step
        self.tag = str(tag)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if os.environ.get("KILL_TAG") == self.tag and trainer.global_step + 1 >= self.step:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
