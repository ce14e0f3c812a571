"""Where a run meets the cluster: device counts, SLURM GPU requests, precision, the Lightning cluster
environment (SLURM auto-requeue off: submitit owns requeueing) and W&B tags. Registers on import the
OmegaConf resolvers the configs use: ``distill.devices``, ``distill.slurm_gpus``, ``distill.precision``,
``distill.wandb_tags``, ``distill.basename`` (:data:`RESOLVERS`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

#: accelerators whose devices are GPUs (SLURM must hand them out with --gpus-per-node)
GPU_ACCELERATORS = ("gpu", "cuda")


# ---------------------------------------------------------------------------- device counts
def count_devices(devices: Any, accelerator: str | None = "cpu") -> int:
    """How many processes a Trainer with ``devices`` and ``accelerator`` runs on one node, in Lightning's
    meanings (an int, a list of indices, ``"2"``, ``"0,1"``). ``"auto"`` / ``-1`` (every device of the
    node) is 1 process on a CPU and refused for GPUs, whose count must be known when the job is sized."""
    accelerator = str(accelerator or "auto").lower()
    if isinstance(devices, (list, tuple, ListConfig)):
        if len(devices) == 0:
            raise ValueError("trainer.devices is an empty list")
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip().lower()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        try:
            devices = -1 if text == "auto" else int(text)
        except ValueError:
            raise ValueError(f"trainer.devices={devices!r} is not a device count") from None
    if isinstance(devices, bool) or not isinstance(devices, int):
        raise ValueError(f"trainer.devices={devices!r} is not a device count")
    if devices > 0:
        return devices
    if devices != -1:
        raise ValueError(f"trainer.devices={devices}: expected a positive count, -1 or 'auto'")
    if accelerator not in ("cpu", "auto"):
        raise ValueError(f"trainer.devices=auto/-1 with accelerator={accelerator!r}: the number of GPUs per node "
                         "must be known when the SLURM job is sized; set trainer.devices=N")
    return 1


def slurm_gpus_per_node(devices: Any, accelerator: str | None) -> int | None:
    """GPUs per node to request from SLURM: one per device for GPU accelerators, none otherwise
    (``accelerator=auto`` too, so a CPU-only sweep never waits for a GPU partition)."""
    if str(accelerator or "auto").lower() in GPU_ACCELERATORS:
        return count_devices(devices, accelerator)
    return None


def auto_precision(preferred: str = "bf16-mixed") -> str:
    """``preferred`` when this machine can run it, else full precision. Resolved in the job itself, so it
    sees the node's GPU; fp16 is deliberately not a fallback (T5 v1.1 overflows in fp16)."""
    if not preferred.startswith("bf16"):
        return preferred
    import torch

    return preferred if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


# ---------------------------------------------------------------------------- Lightning side
def cluster_environment() -> Any:
    """The cluster environment Lightning would pick (torchelastic, SLURM, LSF, MPI, else local), but
    ``SLURMEnvironment(auto_requeue=False)`` under SLURM (submitit owns requeueing) and
    :class:`~distill.launch.submitit_local.SubmititLocalEnvironment` in a ``hydra/launcher=local`` job."""
    from pytorch_lightning.plugins.environments import (LightningEnvironment, LSFEnvironment, MPIEnvironment,
                                                        SLURMEnvironment, TorchElasticEnvironment)

    if TorchElasticEnvironment.detect():  # torchrun inside a SLURM allocation wins, as in Lightning
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment(auto_requeue=False)
    from distill.launch.submitit_local import SubmititLocalEnvironment

    if SubmititLocalEnvironment.detect():  # hydra/launcher=local: submitit started one task per device
        return SubmititLocalEnvironment()
    for env_type in (LSFEnvironment, MPIEnvironment):
        if env_type.detect():
            return env_type()
    return LightningEnvironment()


# ---------------------------------------------------------------------------- W&B grouping
def wandb_tags(user_tags: Iterable[Any] | None, *pairs: Any) -> list[str]:
    """Tags for a W&B run: the user's ``tags`` plus ``name:value`` for each of the alternating ``pairs``
    (``"benchmark", "svamp", "fraction", 0.25``), unique, each cut to W&B's 64 characters."""
    if len(pairs) % 2:
        raise ValueError(f"distill.wandb_tags expects name/value pairs, got {len(pairs)} values")
    if isinstance(user_tags, ListConfig):
        user_tags = OmegaConf.to_container(user_tags, resolve=True)
    tags = [str(tag) for tag in (user_tags or [])]
    tags += [f"{name}:{value}"[:64] for name, value in zip(pairs[0::2], pairs[1::2])]
    return list(dict.fromkeys(tags))  # unique, in order


RESOLVERS = {
    "distill.devices": count_devices,
    "distill.slurm_gpus": slurm_gpus_per_node,
    "distill.precision": auto_precision,
    "distill.wandb_tags": wandb_tags,
    # the last component of a path: ${distill.basename:${hydra:sweep.dir}} names a sweep
    "distill.basename": lambda path: Path(str(path)).name,
}
for _name, _function in RESOLVERS.items():  # on import; safe to repeat
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _function)
