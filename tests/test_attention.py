"""``speed.eager_attention``: training steps on transformers' eager attention compute what the fused
SDPA kernel computes (losses and gradients, both layouts), generation keeps the model's own kernel,
and the lever is on by default on a CPU only."""

from __future__ import annotations

import pytest
import torch

import distill.models.module as module_file
from distill.models.attention import attention_implementation
from distill.utils.speed import Speed, resolve_speed
from train_utils import module_and_train_batch

TINY_CAUSAL = {"kind": "tiny_causal", "name_or_path": None, "short_name": "tiny_causal", "hidden_size": 64,
               "intermediate_size": 128, "num_layers": 2, "num_heads": 4}
MINILM = {"kind": "minilm", "name_or_path": None, "short_name": "minilm", "dropout": 0.0}
CASES = {"causal, paper layout": (TINY_CAUSAL, False), "causal, shared input": (TINY_CAUSAL, True),
         "minilm encoder-decoder": (MINILM, False)}


def _implementations(model: torch.nn.Module) -> set[str]:
    return {m.config._attn_implementation for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}


def _loss_and_gradients(module, batch, implementation):
    module.model.zero_grad()
    with attention_implementation(module.model, implementation):
        seen = _implementations(module.model)
        loss = module.compute_losses(batch)["loss"]
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in module.model.named_parameters() if p.grad is not None}
    return seen, loss.detach(), grads


@pytest.mark.parametrize("case", list(CASES))
def test_eager_attention_trains_as_sdpa_does(case):
    student, shared = CASES[case]
    module, batch = module_and_train_batch(student, Speed(target_only_logits=True), shared_input=shared)
    own = _implementations(module.model)
    assert own == {"sdpa"}, "the student loads with SDPA attention"
    seen_sdpa, loss_sdpa, grads_sdpa = _loss_and_gradients(module, batch, "sdpa")
    seen_eager, loss_eager, grads_eager = _loss_and_gradients(module, batch, "eager")
    assert (seen_sdpa, seen_eager) == ({"sdpa"}, {"eager"})
    assert _implementations(module.model) == own, "the model's own kernel is back after the block"
    assert torch.allclose(loss_eager, loss_sdpa, rtol=1e-5, atol=1e-6), (float(loss_eager), float(loss_sdpa))
    assert grads_eager.keys() == grads_sdpa.keys() and grads_eager
    # fp32 sums in another order differ by ~1e-6 of the largest gradient entry (some exact-zero gradients,
    # such as a key bias's, are pure rounding noise), so the floor scales with the gradients themselves
    scale = max(float(g.abs().max()) for g in grads_sdpa.values())
    for name in grads_sdpa:
        assert torch.allclose(grads_eager[name], grads_sdpa[name], rtol=1e-4, atol=1e-5 * scale), name


@pytest.mark.parametrize("eager", [True, False])
def test_a_training_step_uses_the_lever_and_generation_does_not(monkeypatch, eager):
    module, batch = module_and_train_batch(TINY_CAUSAL, Speed(target_only_logits=True, eager_attention=eager))
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no trainer to log to
    seen: list[set[str]] = []
    compute = module.compute_losses
    monkeypatch.setattr(module, "compute_losses", lambda b: (seen.append(_implementations(module.model)), compute(b))[1])
    module.training_step(batch, 0)
    assert seen == [{"eager" if eager else "sdpa"}]
    generated: list[set[str]] = []
    monkeypatch.setattr(module_file, "generate_from_ids",
                        lambda model, *args, **kwargs: generated.append(_implementations(model)) or ["x"])
    module.predict_labels(batch["label"]["input_ids"][:1], batch["label"]["attention_mask"][:1])
    assert generated == [{"sdpa"}]


def test_eager_attention_is_on_by_default_on_a_cpu_only():
    assert resolve_speed({"eager_attention": "auto"}, on_cuda=False).eager_attention
    assert not resolve_speed({"eager_attention": "auto"}, on_cuda=True).eager_attention
    assert not resolve_speed({"eager_attention": False}, on_cuda=False).eager_attention
