"""The optimizer and lr schedule by ``_target_`` (conf/optimizer/, conf/scheduler/): the lr of every step,
the parameter groups, the configs, and a schedule restored from a checkpoint's state."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

from distill.models.module import DistillModule
from train_utils import compose_train

TINY = {"kind": "tiny", "short_name": "tiny"}
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-4, "weight_decay": 0.0,
         "betas": [0.9, 0.999], "eps": 1e-8}


def scheduler(name: str, warmup_ratio: float) -> dict:
    return {"_target_": "transformers.get_scheduler", "_partial_": True, "name": name, "warmup_ratio": warmup_ratio}


def configured(module: DistillModule, max_steps: int = 100):
    module._trainer = SimpleNamespace(max_steps=max_steps, estimated_stepping_batches=max_steps,
                                      precision_plugin=SimpleNamespace())
    conf = module.configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == "step"
    return conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def lrs(module: DistillModule, steps: int = 100, max_steps: int = 100) -> list[float]:
    optimizer, schedule = configured(module, max_steps)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def hand_written(lr: float, total: int, warmup_ratio: float, constant: bool) -> list[float]:
    """The schedule distill wrote by hand before conf/scheduler/ (LambdaLR over this factor)."""
    warmup = int(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 if constant else max(0.0, (total - step) / max(1, total - warmup))

    return [lr * factor(step) for step in range(total)]


@pytest.fixture(scope="module")
def module() -> DistillModule:
    return DistillModule(model=TINY, optimizer=ADAMW)


@pytest.mark.parametrize("name, constant", [("linear", False), ("constant_with_warmup", True)])
def test_without_warmup_every_step_has_the_hand_written_lr(module, name, constant):
    module.scheduler_cfg = scheduler(name, 0.0)
    assert lrs(module) == hand_written(3e-4, 100, 0.0, constant)


@pytest.mark.parametrize("name, constant", [("linear", False), ("constant_with_warmup", True)])
def test_warmup_climbs_from_zero_then_follows_the_hand_written_lr(module, name, constant):
    """transformers' warmup starts at 0 (step s of w: s/w); the hand-written one started at 1/w and
    so reached the peak one step earlier. From the end of warmup on they agree."""
    module.scheduler_cfg = scheduler(name, 0.05)
    got, before = lrs(module), hand_written(3e-4, 100, 0.05, constant)
    assert got[:5] == pytest.approx([0.0, 6e-5, 1.2e-4, 1.8e-4, 2.4e-4], rel=1e-12)
    assert got[1:5] == before[:4]
    assert got[5:] == before[5:]


def test_parameter_groups_and_optimizer_settings():
    module = DistillModule(model=TINY, optimizer={**ADAMW, "weight_decay": 0.1, "betas": [0.8, 0.99], "eps": 1e-6})
    optimizer, _ = configured(module)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and any(p.ndim < 2 for p in plain["params"])
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all("norm" in names[id(p)].lower() or p.ndim < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == sum(1 for p in module.model.parameters() if p.requires_grad)
    assert (decayed["betas"], decayed["eps"], decayed["lr"]) == ((0.8, 0.99), 1e-6, 3e-4)
    assert optimizer.defaults["fused"] is None  # the fused kernel is the speed lever's (tests/test_speed.py)


def test_configs_choose_the_schedule_and_its_warmup(tmp_path):
    cfg = compose_train(["model=tiny", "scheduler=constant", "scheduler.warmup_ratio=0.2", "optimizer.lr=0.01"], tmp_path)
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.scheduler.name == "constant_with_warmup"
    module = DistillModule(model=TINY, optimizer=cfg.optimizer, scheduler=cfg.scheduler)
    assert lrs(module, 5, max_steps=10) == pytest.approx([0.0, 0.005, 0.01, 0.01, 0.01], rel=1e-12)
    default = compose_train(["model=tiny", "data=svamp"], tmp_path)
    assert (default.scheduler.name, default.scheduler.warmup_ratio) == ("linear", 0.0)
    tuned = compose_train([], tmp_path)  # conf/tuning/arith_minilm.yaml: 5% warmup
    assert (tuned.scheduler.name, tuned.scheduler.warmup_ratio) == ("linear", 0.05)


def test_a_schedule_restored_from_its_state_goes_on_as_the_uninterrupted_one():
    """What a resumed run does: a fresh optimizer and schedule, their state loaded from the checkpoint."""
    module = DistillModule(model=TINY, optimizer=ADAMW, scheduler=scheduler("linear", 0.1))
    straight = lrs(module, 20, max_steps=20)
    optimizer, schedule = configured(module, 20)
    for _ in range(7):
        optimizer.step()
        schedule.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}
    torch.save(state, buffer := io.BytesIO())
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as Lightning restores a checkpoint
    optimizer, schedule = configured(module, 20)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(13):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert resumed == straight[7:]
