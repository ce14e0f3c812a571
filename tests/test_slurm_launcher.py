"""The SLURM/local launcher configs, the trainer configs and distill.launch.cluster, without a cluster:
job sizes derived from the trainer, the sbatch script submitit would write, requeue owned by
submitit only, W&B group/tags, strategies that instantiate."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from distill.launch import cluster

REPO = Path(__file__).resolve().parents[1]

SLURM_VARS = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
              "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train",
              "SLURM_NODELIST": "node1"}


@pytest.fixture(autouse=True)
def _clean_hydra():
    """compose_train sets Hydra's global state (for ${hydra:...}); leave none behind."""
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def launcher_sizes(cfg) -> tuple[int, int | None, int]:
    launcher = cfg.hydra.launcher
    return launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer=cpu"], (1, None, 1)),
        (["trainer=ddp_cpu"], (2, None, 1)),
        (["trainer=gpu"], (1, 1, 1)),
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], (4, 4, 2)),
        (["trainer=ddp", "trainer.devices=[0,1,2]"], (3, 3, 1)),
        (["trainer=ddp", "trainer.devices='0,1'"], (2, 2, 1)),
        (["trainer=fsdp", "trainer.devices=8"], (8, 8, 1)),
        (["trainer=deepspeed"], (4, 4, 1)),
    ],
)
def test_slurm_job_is_sized_from_the_trainer(overrides: list[str], expected: tuple) -> None:
    cfg = compose_train(["hydra/launcher=slurm", "model=tiny", *overrides])
    assert launcher_sizes(cfg) == expected
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_local_launcher_is_sized_the_same_way() -> None:
    cfg = compose_train(["hydra/launcher=local", "model=tiny", "trainer=ddp_cpu"])
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (2, None)
    cfg = compose_train(["hydra/launcher=local", "model=tiny", "trainer=ddp", "trainer.devices=2"])
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (2, 2)


def test_submitit_local_tasks_are_lightning_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.launch.submitit_local import SubmititLocalEnvironment

    for key in list(SLURM_VARS) + ["TORCHELASTIC_RUN_ID", "MASTER_PORT"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    for key, value in {"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
                       "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                       "SUBMITIT_LOCAL_JOB_ID": "4242"}.items():
        monkeypatch.setenv(key, value)
    env = cluster.cluster_environment()
    assert isinstance(env, SubmititLocalEnvironment) and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (2, 1, 1, 0)
    assert env.main_port == 24242
    env.validate_settings(num_devices=2, num_nodes=1)
    with pytest.raises(ValueError, match="trainer.devices=4 but the submitit local job has 2 tasks"):
        env.validate_settings(num_devices=4, num_nodes=1)


def test_gpu_count_must_be_known_when_the_job_is_sized() -> None:
    cfg = compose_train(["hydra/launcher=slurm", "model=tiny", "trainer=ddp", "trainer.devices=auto"])
    with pytest.raises(Exception, match="number of GPUs per node must be known"):
        _ = cfg.hydra.launcher.tasks_per_node


def test_sbatch_script_submitit_writes() -> None:
    """The launcher's parameters, as hydra-submitit-launcher hands them to submitit, make the
    sbatch script we mean: one task per device, GPUs per node, submitit's USR2 timeout signal."""
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = compose_train(["hydra/launcher=slurm", "model=tiny", "trainer=ddp", "trainer.devices=4",
                         "trainer.num_nodes=2", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                         "hydra.sweep.dir=/tmp/sweep"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "stderr_to_stdout"}
    kwargs = {k: v for k, v in params.items()
              if k in base or k in ("partition", "account", "qos", "signal_delay_s", "additional_parameters",
                                    "array_parallelism", "setup")}
    kwargs["job_name"] = params["name"]
    kwargs["time"] = kwargs.pop("timeout_min")
    kwargs["mem"] = f"{kwargs.pop('mem_gb')}GB"
    kwargs["ntasks_per_node"] = kwargs.pop("tasks_per_node")
    script = _make_sbatch_string(command="python -m submitit.core._submit", folder="/tmp/sweep/.submitit/%j", **kwargs)
    for line in ("#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --signal=USR2@120",
                 "#SBATCH --cpus-per-task=4", "export OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false"):
        assert line in script
    assert "srun" in script  # submitit starts the tasks with srun, so SLURM (not Lightning) starts the ranks


def test_requeue_is_owned_by_submitit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_train(["hydra/launcher=slurm", "model=tiny"])
    assert cfg.hydra.launcher.max_num_timeout > 0  # submitit requeues on time-out

    import pytorch_lightning as pl
    from pytorch_lightning.plugins.environments import LightningEnvironment, SLURMEnvironment

    for key in list(SLURM_VARS) + ["TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK"]:
        monkeypatch.delenv(key, raising=False)
    assert isinstance(cluster.cluster_environment(), LightningEnvironment)

    for key, value in SLURM_VARS.items():
        monkeypatch.setenv(key, value)
    env = cluster.cluster_environment()
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False

    # a Trainer built with it installs no USR1 (requeue) handler of its own
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    before = signal.getsignal(signal.SIGUSR1)
    trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=[cluster.cluster_environment()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    trainer._signal_connector.register_signal_handlers()
    try:
        assert trainer._accelerator_connector.cluster_environment.auto_requeue is False
        assert signal.getsignal(signal.SIGUSR1) == before
    finally:
        trainer._signal_connector.teardown()

    # torchrun inside a SLURM allocation: torchelastic wins, as in Lightning's own order
    for key, value in {"TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "GROUP_RANK": "0",
                       "RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    assert type(cluster.cluster_environment()).__name__ == "TorchElasticEnvironment"


@pytest.mark.parametrize("name", ["gpu", "ddp", "ddp_cpu", "fsdp", "deepspeed"])
def test_trainer_configs_compose_from_default(name: str) -> None:
    cfg = compose_train([f"trainer={name}", "model=tiny"])
    trainer = cfg.trainer
    assert trainer._target_ == "pytorch_lightning.Trainer"
    assert trainer.use_distributed_sampler is False  # from default.yaml: the global-batch sampler stays
    plugins = instantiate(trainer.plugins)
    assert len(plugins) == 1 and type(plugins[0]).__module__.startswith("lightning_fabric.plugins.environments")
    # no bf16 on this CPU machine: full precision, never fp16
    assert trainer.precision == "32-true"


def test_strategies_instantiate() -> None:
    from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

    ddp_cpu = instantiate(compose_train(["trainer=ddp_cpu", "model=tiny"]).trainer.strategy)
    assert isinstance(ddp_cpu, DDPStrategy) and ddp_cpu._process_group_backend == "gloo"
    ddp = instantiate(compose_train(["trainer=ddp", "model=tiny"]).trainer.strategy)
    assert isinstance(ddp, DDPStrategy) and ddp._process_group_backend == "nccl"
    fsdp = instantiate(compose_train(["trainer=fsdp", "model=tiny"]).trainer.strategy)
    assert isinstance(fsdp, FSDPStrategy)
    from transformers.models.t5.modeling_t5 import T5Block

    assert T5Block in fsdp.kwargs["auto_wrap_policy"]._module_classes
    assert T5Block in fsdp._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes


def test_deepspeed_strategy_instantiates_where_installed() -> None:
    pytest.importorskip("deepspeed", reason="deepspeed is an optional extra: pip install -e '.[deepspeed]'")
    from pytorch_lightning.strategies import DeepSpeedStrategy

    strategy = instantiate(compose_train(["trainer=deepspeed", "model=tiny"]).trainer.strategy)
    assert isinstance(strategy, DeepSpeedStrategy)


def test_count_devices() -> None:
    assert cluster.count_devices(2) == 2
    assert cluster.count_devices("3") == 3
    assert cluster.count_devices("0,1,") == 2
    assert cluster.count_devices([0, 2]) == 2
    assert cluster.count_devices("auto", "cpu") == 1
    assert cluster.count_devices(-1, "cpu") == 1
    for bad in (0, -2, "many", [], True):
        with pytest.raises(ValueError, match="trainer.devices"):
            cluster.count_devices(bad, "gpu")
    assert cluster.slurm_gpus_per_node(4, "gpu") == 4
    assert cluster.slurm_gpus_per_node(4, "cuda") == 4
    assert cluster.slurm_gpus_per_node(2, "cpu") is None
    assert cluster.slurm_gpus_per_node(1, "auto") is None


def test_precision_falls_back_to_full_not_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert cluster.auto_precision("bf16-mixed") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert cluster.auto_precision("bf16-mixed") == "bf16-mixed"
    assert cluster.auto_precision("16-mixed") == "16-mixed"  # an explicit choice is kept


def test_wandb_runs_of_a_sweep_share_a_group_and_carry_axis_tags() -> None:
    cfg = compose_train(["logger=wandb", "model=tiny", "method=step_by_step", "data.fraction=0.25", "seed=3",
                         "tags=[paper]", "hydra.sweep.dir=logs/train/multiruns/2026-01-02_03-04-05"])
    with open_dict(cfg):
        cfg.experiment_name = "svamp_fraction"
    wandb = cfg.logger.wandb
    assert wandb.group == "svamp_fraction-2026-01-02_03-04-05"
    assert list(wandb.tags) == ["paper", "benchmark:arith", "method:step_by_step", "model:tiny", "fraction:0.25",
                                "labels:gold", "seed:3"]
    with open_dict(cfg):
        del cfg.experiment_name
    assert cfg.logger.wandb.group == "train-2026-01-02_03-04-05"


def test_wandb_tags_validation() -> None:
    assert cluster.wandb_tags(None, "a", 1, "a", 1) == ["a:1"]
    assert len(cluster.wandb_tags([], "name", "x" * 100)[0]) == 64
    with pytest.raises(ValueError, match="name/value pairs"):
        cluster.wandb_tags([], "lonely")
