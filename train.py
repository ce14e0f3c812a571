"""Train a student: ``python train.py [group=option ...] [key=value ...]`` (``-m`` for sweeps).

With no arguments: the offline default (a benchmark made in code, the pretrained MiniLM
student, Distilling Step-by-Step), a few minutes on a laptop CPU. See README.md for the paper's recipes.
"""

from distill.utils.runtime import configure_openmp

configure_openmp()  # before torch is imported: idle OpenMP threads spin briefly, then sleep

import hydra  # noqa: E402
import distill  # noqa: E402,F401  (registers the OmegaConf resolvers conf/ uses, before Hydra composes)
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from distill.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
