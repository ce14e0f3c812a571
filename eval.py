"""Score a trained checkpoint: ``python eval.py ckpt_path=PATH [split=test|val]``."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from distill.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
