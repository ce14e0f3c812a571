"""The step-by-step loss is exactly L_label + lambda * L_rationale (or the official alpha form),
checked against two plain forward passes of the same Hugging Face model on the same batch, with
the token cross-entropy computed here from the logits (not by the model's own loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data import DistillDataModule
from distill.models.module import DistillModule, combine_losses

TINY = {"kind": "tiny", "name_or_path": None, "short_name": "tiny"}


@pytest.fixture(scope="module")
def module_and_batch():
    module = DistillModule(model=TINY, method="step_by_step")
    module.eval()  # no dropout: both computations must see the same function
    dm = DistillDataModule(
        benchmark={"_target_": "distill.benchmarks.arith.Arith", "train_size": 16, "val_size": 4, "test_size": 4},
        data_dir=".",
        tokenizer=module.tokenizer,
        split_files={"train": "train", "val": "val", "test": "test"},
        targets="step_by_step",
        batch_size=8,
        cache_dir=None,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "rationale" in batch, "arith examples all carry rationales"
    return module, batch


def plain_loss(model, task_batch) -> torch.Tensor:
    labels = task_batch["labels"]
    logits = model(
        input_ids=task_batch["input_ids"], attention_mask=task_batch["attention_mask"], labels=labels
    ).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("rationale_weight", [1.0, 0.5, 2.0])
def test_step_by_step_loss_is_label_plus_lambda_rationale(module_and_batch, rationale_weight):
    module, batch = module_and_batch
    module.rationale_weight, module.alpha = rationale_weight, None
    with torch.no_grad():
        losses = module.compute_losses(batch)
        label = plain_loss(module.model, batch["label"])
        rationale = plain_loss(module.model, batch["rationale"])
    expected = label + rationale_weight * rationale
    assert torch.allclose(losses["loss"], expected, atol=1e-5), (losses["loss"], expected)
    assert torch.allclose(losses["loss_label"], label, atol=1e-5)
    assert torch.allclose(losses["loss_rationale"], rationale, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_official_alpha_form(module_and_batch, alpha):
    module, batch = module_and_batch
    module.rationale_weight, module.alpha = 1.0, alpha
    with torch.no_grad():
        loss = module.compute_losses(batch)["loss"]
        expected = alpha * plain_loss(module.model, batch["label"]) + (1 - alpha) * plain_loss(
            module.model, batch["rationale"]
        )
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)


def test_standard_method_ignores_rationales(module_and_batch):
    module, batch = module_and_batch
    module.method, module.alpha = "standard", None
    try:
        with torch.no_grad():
            losses = module.compute_losses(batch)
            label = plain_loss(module.model, batch["label"])
    finally:
        module.method = "step_by_step"
    assert "loss_rationale" not in losses
    assert torch.allclose(losses["loss"], label, atol=1e-5)


def test_combine_losses_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="alpha"):
        combine_losses(torch.tensor(1.0), torch.tensor(1.0), alpha=1.5)
