"""Composing and running ``conf/train.yaml`` in-process for tests (no Hydra app, no subprocess)."""

from __future__ import annotations

import os
from pathlib import Path

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


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``train.py``/``python -m distill...`` subprocess: one quiet thread,
    offline W&B and hub, this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env
