"""Lightning's view of a submitit *local* job with several tasks (``hydra/launcher=local``, one process per
device as srun starts them on SLURM). Lightning knows SLURM's variables but not submitit-local's: without
this environment each task would believe it is alone and start the other ranks itself (which fails)."""

from __future__ import annotations

import os

from pytorch_lightning.plugins.environments import ClusterEnvironment


class SubmititLocalEnvironment(ClusterEnvironment):
    """Ranks from ``SUBMITIT_LOCAL_*``; processes are started by submitit, not by Lightning. The port is
    ``MASTER_PORT``, else derived from the job's id (its controller's pid), so concurrent jobs differ."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        job_id = "".join(ch for ch in os.environ.get("SUBMITIT_LOCAL_JOB_ID", "0") if ch.isdigit()) or "0"
        return 20000 + int(job_id) % 20000

    @staticmethod
    def detect() -> bool:
        return os.environ.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_NTASKS" in os.environ

    def world_size(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_NTASKS"]) * int(os.environ.get("SUBMITIT_LOCAL_JOB_NUM_NODES", "1"))

    def set_world_size(self, size: int) -> None:
        if size != self.world_size():
            raise ValueError(f"the submitit local job has {self.world_size()} tasks but Lightning wants {size} processes")

    def global_rank(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_GLOBALID"])

    def set_global_rank(self, rank: int) -> None:
        pass  # fixed by submitit

    def local_rank(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_LOCALID"])

    def node_rank(self) -> int:
        return int(os.environ.get("SUBMITIT_LOCAL_NODEID", "0"))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        ntasks = int(os.environ["SUBMITIT_LOCAL_NTASKS"])
        if ntasks != num_devices:
            raise ValueError(
                f"trainer.devices={num_devices} but the submitit local job has {ntasks} tasks: "
                "hydra/launcher=local sizes the job from trainer.devices, so set them together"
            )
