"""The step-by-step loss is exactly L_label + lambda * L_rationale (or the official alpha form),
checked against two plain forward passes of the same Hugging Face model on the same batch, with
the token cross-entropy computed here from the logits (not by the model's own loss), on the plain
path and with the exact speed lever that changes how losses are computed (target-only logits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.models.losses import combine_losses
from distill.utils.speed import PLAIN, Speed
from train_utils import module_and_train_batch

TINY = {"kind": "tiny", "name_or_path": None, "short_name": "tiny"}
#: the offline default student: a BERT encoder-decoder (EncoderDecoderModel), another head layout than T5's
MINILM = {"kind": "minilm", "name_or_path": None, "short_name": "minilm"}

SPEEDS = {"plain": PLAIN, "target_only": Speed(target_only_logits=True)}


def build_module_and_batch(student: dict, speed: Speed):
    return module_and_train_batch(student, speed)


@pytest.fixture(scope="module", params=list(SPEEDS))
def module_and_batch(request):
    return build_module_and_batch(TINY, SPEEDS[request.param])


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


@pytest.mark.parametrize("speed", ["plain", "target_only"])
def test_loss_identity_on_the_bert_encoder_decoder(speed):
    """The default student's output head (BERT's transform, then a tied projection) takes
    target-only logits as exactly as T5's does."""
    module, batch = build_module_and_batch(MINILM, SPEEDS[speed])
    with torch.no_grad():
        losses = module.compute_losses(batch)
        label = plain_loss(module.model, batch["label"])
        rationale = plain_loss(module.model, batch["rationale"])
    assert torch.allclose(losses["loss_label"], label, atol=1e-5)
    assert torch.allclose(losses["loss_rationale"], rationale, atol=1e-5)
    assert torch.allclose(losses["loss"], label + rationale, atol=1e-5)


def test_target_only_gradients_equal_the_plain_ones():
    """Exact under autograd too: the gradients of the fast path's loss are the plain path's."""
    grads = {}
    for name in ("plain", "target_only"):
        module, batch = build_module_and_batch(TINY, SPEEDS[name])
        module.compute_losses(batch)["loss"].backward()
        grads[name] = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    assert grads["plain"].keys() == grads["target_only"].keys()
    for n, g in grads["plain"].items():
        assert torch.allclose(g, grads["target_only"][n], atol=1e-6, rtol=1e-4), n


def test_a_student_without_an_output_projection_falls_back_to_the_plain_losses():
    module, batch = build_module_and_batch(TINY, SPEEDS["target_only"])
    module.model.get_output_embeddings = lambda: None  # as some architectures answer
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    module.eval()  # no dropout: the step's loss must be the plain one exactly
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        expected = plain_loss(module.model, batch["label"]) + plain_loss(module.model, batch["rationale"])
    assert not module.speed.target_only_logits
    assert torch.allclose(loss, expected, atol=1e-5)
