"""Step 1 of Distilling Step-by-Step: extract rationales and labels from a teacher LLM.

    python annotate.py data=svamp split=train teacher=openai \
        teacher.backend.base_url=http://localhost:8000/v1 teacher.backend.model=MODEL teacher.name=T
    python annotate.py data=cqa split=train teacher=hf teacher.backend.model=PATH teacher.name=T

A SLURM array splits one split into contiguous slices; the merge then writes the files (it asks
nothing, and names the shards that are incomplete):

    #SBATCH --array=0-7
    python annotate.py data=cqa split=train teacher=openai ... \
        teacher.shard=$SLURM_ARRAY_TASK_ID teacher.num_shards=8
    python annotate.py data=cqa split=train teacher=openai ... teacher.num_shards=8 merge=true

All jobs and the merge need the same teacher.backend settings and a shared teacher.cache_dir.
A killed job loses nothing it had answered: rerun it and it asks only for what is missing.

See distill.teacher.annotator for what a run does and conf/annotate.yaml for the options.
"""

from distill.utils.runtime import configure_openmp

configure_openmp()  # before torch is imported (teacher=hf)

import hydra  # noqa: E402
import distill  # noqa: E402,F401  (registers the OmegaConf resolvers conf/ uses, before Hydra composes)
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="annotate")
def main(cfg: DictConfig) -> None:
    from distill.teacher.annotator import run

    run(cfg)


if __name__ == "__main__":
    main()
