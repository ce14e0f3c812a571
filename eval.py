"""Score a trained checkpoint: ``python eval.py ckpt_path=PATH [split=test|val]``."""

from distill.utils.runtime import configure_openmp

configure_openmp()  # before torch is imported

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from distill.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
