"""Which attention kernel a student trains with (``speed.eager_attention``, docs/speed.md).

On a CPU, at the lengths these tasks have (tens to a few hundred tokens), transformers' eager
attention (plain matmuls and a softmax) trains faster than torch's fused SDPA kernel, whose CPU
backward dominates a step; with a custom 4D mask (the shared-input layout) by more still. Both
compute the same attention: the switch holds for training steps only, generation keeps the model's
own kernel (SDPA decodes faster)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _configs(model: torch.nn.Module) -> list:
    """Every distinct config the model's modules read (an encoder-decoder has several)."""
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextmanager
def attention_implementation(model: torch.nn.Module, implementation: str | None) -> Iterator[None]:
    """Run the block with every attention layer of ``model`` on ``implementation`` (``"eager"``,
    ``"sdpa"``; None: as it is), and put back what each had after it."""
    if implementation is None:
        yield
        return
    configs = _configs(model)
    before = [config._attn_implementation for config in configs]
    for config in configs:
        config._attn_implementation = implementation
    try:
        yield
    finally:
        for config, previous in zip(configs, before):
            config._attn_implementation = previous
