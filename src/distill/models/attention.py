"""Which attention kernel a student trains with (``speed.eager_attention``, docs/speed.md): on a CPU, at
these lengths, transformers' eager attention trains faster than torch's fused SDPA kernel (whose CPU
backward dominates a step), and computes the same attention. Training steps only: generation keeps the
model's own kernel (SDPA decodes faster)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def attention_implementation(model: torch.nn.Module, implementation: str | None) -> Iterator[None]:
    """Run the block with every attention layer of ``model`` on ``implementation`` (``"eager"``,
    ``"sdpa"``; None: as it is), and put back what each had after it."""
    if implementation is None:
        yield
        return
    # every distinct config the model's modules read (an encoder-decoder has several)
    configs = {id(module.config): module.config for module in model.modules()
               if hasattr(getattr(module, "config", None), "_attn_implementation")}
    before = {key: config._attn_implementation for key, config in configs.items()}
    for config in configs.values():
        config._attn_implementation = implementation
    try:
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = before[key]
