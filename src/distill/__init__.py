"""distill: Distilling Step-by-Step with Hydra and PyTorch Lightning."""

# registers the OmegaConf resolvers that conf/ uses (${distill.devices:...}, ${distill.precision:...}, ...)
from distill.launch import cluster as _cluster  # noqa: F401
