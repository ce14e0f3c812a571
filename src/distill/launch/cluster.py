"""Where a run meets the cluster: device counts, SLURM GPU requests, precision, the Lightning cluster
environment (SLURM auto-requeue off: submitit owns requeueing) and W&B tags. Registers on import the
OmegaConf resolvers the configs use: ``distill.devices``, ``distill.slurm_gpus``, ``distill.precision``,
``distill.wandb_tags``, ``distill.basename`` (:data:`RESOLVERS`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

#: accelerators whose devices are GPUs (SLURM must hand them out with --gpus-per-node)
GPU_ACCELERATORS = ("gpu", "cuda")


# ---------------------------------------------------------------------------- device counts
def count_devices(devices: Any, accelerator: str | None = "cpu") -> int:
    """How many processes a Trainer with ``devices`` and ``accelerator`` runs on one node.

    Follows Lightning's meanings: an int ``n`` is n devices; a list is those device indices; a
    string is an int (``"2"``) or a comma list of indices (``"0,1"``). ``"auto"`` and ``-1`` mean
    "every device of the node": for a CPU accelerator that is 1 process, for GPUs it cannot be
    known before the job lands on a node, so it is refused with a hint.
    """
    accelerator = str(accelerator or "auto").lower()
    if isinstance(devices, (list, tuple, ListConfig)):
        if len(devices) == 0:
            raise ValueError("trainer.devices is an empty list")
        return len(devices)
    if isinstance(devices, bool):
        raise ValueError(f"trainer.devices={devices!r} is not a device count")
    if isinstance(devices, str):
        text = devices.strip().lower()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        if text == "auto":
            devices = -1
        else:
            try:
                devices = int(text)
            except ValueError:
                raise ValueError(f"trainer.devices={devices!r} is not a device count") from None
    if isinstance(devices, int):
        if devices > 0:
            return devices
        if devices == -1:
            if accelerator in ("cpu", "auto"):
                return 1
            raise ValueError(
                f"trainer.devices=auto/-1 with accelerator={accelerator!r}: the number of GPUs per node "
                "must be known when the SLURM job is sized; set trainer.devices=N"
            )
        raise ValueError(f"trainer.devices={devices}: expected a positive count, -1 or 'auto'")
    raise ValueError(f"trainer.devices={devices!r} is not a device count")


def slurm_gpus_per_node(devices: Any, accelerator: str | None) -> int | None:
    """GPUs per node to request from SLURM: one per device for GPU accelerators, none otherwise.

    ``accelerator=auto`` requests no GPUs: pick ``trainer=gpu`` / ``ddp`` / ``fsdp`` / ``deepspeed``
    to ask for them, so a CPU-only sweep never waits for a GPU partition.
    """
    if str(accelerator or "auto").lower() in GPU_ACCELERATORS:
        return count_devices(devices, accelerator)
    return None


def auto_precision(preferred: str = "bf16-mixed") -> str:
    """``preferred`` when this machine can run it, else full precision.

    Resolved in the job itself (where the Trainer is built), so it sees the node's GPU. bf16 needs
    an Ampere-or-newer GPU; 16-bit floats are deliberately not a fallback (T5 v1.1 overflows in fp16).
    """
    if not preferred.startswith("bf16"):
        return preferred
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "32-true"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return preferred
    return "32-true"


# ---------------------------------------------------------------------------- Lightning side
def cluster_environment() -> Any:
    """The cluster environment Lightning would pick, with SLURM auto-requeue off.

    Mirrors Lightning's own detection order (torchelastic, SLURM, LSF, MPI, else a plain local
    environment), changing two things: under SLURM it returns ``SLURMEnvironment(auto_requeue=False)``
    because submitit owns requeueing (see the module doc), and in a submitit *local* job
    (``hydra/launcher=local``) it returns :class:`distill.launch.submitit_local.SubmititLocalEnvironment`,
    whose ranks are submitit's tasks. Used from the trainer configs as
    ``plugins: [{_target_: distill.launch.cluster.cluster_environment}]``.
    """
    from pytorch_lightning.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

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
    """Tags for a W&B run: the user's ``tags`` plus ``key:value`` for each config value.

    ``pairs`` alternate names and values, e.g. ``"benchmark", "svamp", "fraction", 0.25``, so a
    dashboard filters a sweep by any axis without hand work. W&B caps a tag at 64 characters.
    """
    if len(pairs) % 2:
        raise ValueError(f"distill.wandb_tags expects name/value pairs, got {len(pairs)} values")
    tags = [str(tag) for tag in (user_tags or [])]
    for name, value in zip(pairs[0::2], pairs[1::2]):
        tags.append(f"{name}:{value}"[:64])
    return list(dict.fromkeys(tags))  # unique, in order


# ---------------------------------------------------------------------------- resolvers
def _resolver_devices(devices: Any, accelerator: Any = "cpu") -> int:
    return count_devices(devices, accelerator)


def _resolver_basename(path: Any) -> str:
    """The last component of a path: ``${distill.basename:${hydra:sweep.dir}}`` names a sweep."""
    return Path(str(path)).name


def _resolver_wandb_tags(user_tags: Any, *pairs: Any) -> list[str]:
    if isinstance(user_tags, ListConfig):
        user_tags = OmegaConf.to_container(user_tags, resolve=True)
    return wandb_tags(user_tags, *pairs)


RESOLVERS = {
    "distill.devices": _resolver_devices,
    "distill.slurm_gpus": slurm_gpus_per_node,
    "distill.precision": auto_precision,
    "distill.wandb_tags": _resolver_wandb_tags,
    "distill.basename": _resolver_basename,
}


def register_resolvers() -> None:
    """Register this module's OmegaConf resolvers (safe to call any number of times)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()

__all__: Sequence[str] = (
    "auto_precision", "cluster_environment", "count_devices", "register_resolvers", "slurm_gpus_per_node",
    "wandb_tags",
)
