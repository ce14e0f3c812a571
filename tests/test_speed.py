"""The speed levers: `auto` settled per device, `plain` turns every lever off, bf16 on CPU only where
the CPU's features say so (never a timing), and the Trainer and DataModule receive what was resolved."""

from __future__ import annotations

import json

import pytest

import distill.utils.speed as speed_module
from distill.utils.speed import PLAIN, Speed, resolve_speed
from distill.training import build_speed, build_trainer
from train_utils import QUICK, compose_train

FAST = {"fused_optimizer": True, "target_only_logits": True, "cpu_bf16": "auto", "eager_attention": "auto"}


def test_auto_is_settled_for_the_device(monkeypatch):
    monkeypatch.setattr(speed_module, "native_bf16", lambda: None)
    cpu = resolve_speed(FAST, on_cuda=False)
    assert cpu == Speed(fused_optimizer=True, target_only_logits=True, cpu_bf16=False, eager_attention=True)
    cuda = resolve_speed(FAST, on_cuda=True)
    assert cuda == Speed(fused_optimizer=True, target_only_logits=True, cpu_bf16=False)


@pytest.mark.parametrize("native, cpu_bf16", [(None, False), ("AVX512-BF16", True), ("AMX", True)])
def test_cpu_levers_follow_the_cpu_features_and_never_apply_on_cuda(monkeypatch, native, cpu_bf16):
    monkeypatch.setattr(speed_module, "native_bf16", lambda: native)
    assert resolve_speed(FAST, on_cuda=False).cpu_bf16 == cpu_bf16
    assert not resolve_speed(FAST, on_cuda=True).cpu_bf16  # CUDA keeps the run's own precision
    assert not resolve_speed({**FAST, "cpu_bf16": False}, on_cuda=False).cpu_bf16


def test_a_forced_lever_holds_whatever_the_cpu(monkeypatch):
    """``speed.cpu_bf16`` set to true or false holds on a CPU whose features say otherwise (bf16
    autocast on CPU, which a CUDA run never takes)."""
    monkeypatch.setattr(speed_module, "native_bf16", lambda: "AMX")
    resolved = {(cpu_bf16, on_cuda): resolve_speed({**FAST, "cpu_bf16": cpu_bf16}, on_cuda=on_cuda).cpu_bf16
                for cpu_bf16 in (True, False) for on_cuda in (True, False)}
    assert resolved == {(True, False): True, (False, False): False, (True, True): False, (False, True): False}
    monkeypatch.setattr(speed_module, "native_bf16", lambda: None)
    assert resolve_speed({**FAST, "cpu_bf16": True}, on_cuda=False).cpu_bf16


def test_unknown_levers_are_refused():
    with pytest.raises(ValueError, match="unknown speed settings"):
        resolve_speed({"fused_optimiser": True}, on_cuda=False)
    for removed in ("stack_tasks", "fp32_generation"):  # removed levers (docs/speed.md)
        with pytest.raises(ValueError, match="unknown speed settings"):
            resolve_speed({**FAST, removed: "auto"}, on_cuda=True)


def test_a_checkpoint_from_before_the_removed_levers_loads_its_speed():
    old = {**Speed(fused_optimizer=True).as_dict(), "stack_tasks": True, "pad_to_multiple_of": 8, "pin_memory": True,
           "fp32_generation": True}
    assert Speed.of(old) == Speed(fused_optimizer=True)


def test_speed_plain_turns_every_lever_off(tmp_path):
    assert build_speed(compose_train(["speed=plain"], tmp_path)) == PLAIN
    assert PLAIN.describe() == "plain"


def test_a_cpu_run_takes_bf16_autocast_when_the_cpu_is_faster_in_bf16(tmp_path):
    cfg = compose_train([*QUICK, "trainer=cpu"], tmp_path)
    trainer = build_trainer(cfg, Speed(cpu_bf16=True), logger=False)
    assert trainer.precision == "bf16-mixed"
    assert build_trainer(cfg, Speed(cpu_bf16=False), logger=False).precision == "32-true"


@pytest.mark.slow
def test_a_run_with_cpu_bf16_forced_trains_and_tests(tmp_path):
    from distill.training import train

    train(compose_train([*QUICK, "trainer=cpu", "speed.cpu_bf16=true"], tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["global_step"] == 4
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0


def test_fused_optimizer_gradients_are_clipped_like_the_plain_ones():
    """Lightning refuses to clip for a fused optimizer under bf16 autocast; the module clips itself
    (no loss scaler: the gradients are true), to the same norm as torch's clip_grad_norm_."""
    from types import SimpleNamespace

    import torch

    from distill.models.module import DistillModule

    module = DistillModule(model={"kind": "tiny", "short_name": "tiny"}, speed=Speed(fused_optimizer=True).as_dict())
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(model=module), precision_plugin=SimpleNamespace(),
                                      max_steps=10, estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"]
    for p in module.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in module.parameters()]))
    assert abs(float(total) - 1.0) < 2e-3  # float32 sums over 4M entries



@pytest.mark.parametrize("env, spin", [({}, "3000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
                                       ({"GOMP_SPINCOUNT": "10"}, "10")], ids=["default", "policy_set", "spin_set"])
def test_openmp_threads_spin_briefly_unless_the_environment_says_otherwise(monkeypatch, env, spin):
    from distill.utils.runtime import configure_openmp

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    configure_openmp()
    import os

    assert os.environ.get("GOMP_SPINCOUNT") == spin
