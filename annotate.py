"""Step 1 of Distilling Step-by-Step: extract rationales and labels from a teacher LLM.

    python annotate.py data=svamp split=train teacher=openai \
        teacher.base_url=http://localhost:8000/v1 teacher.model=MODEL teacher.name=T
    python annotate.py data=cqa split=train teacher=hf teacher.model=PATH teacher.name=T
    # SLURM array: teacher.shard=$SLURM_ARRAY_TASK_ID teacher.num_shards=N, then the same with merge=true

See distill.teacher.annotator for what a run does and conf/annotate.yaml for the options.
"""

import os

# before torch is imported (teacher=hf): idle OpenMP threads must sleep, not spin
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
import distill  # noqa: E402,F401  (registers the OmegaConf resolvers conf/ uses, before Hydra composes)
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="annotate")
def main(cfg: DictConfig) -> None:
    from distill.teacher.annotator import run

    run(cfg)


if __name__ == "__main__":
    main()
