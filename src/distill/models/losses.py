"""A training step's task losses, each the mean cross-entropy over the task's target tokens, and how they
combine (:func:`combine_losses`): the model's own, or the fast paths (target-only logits, x computed once in
the shared-input layout) that :func:`fast_losses_agree` and :func:`shared_losses_agree` check on a first batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from distill.data.shared_input import unshared_causal_tasks
from distill.models.student import CAUSAL, kind_of

Losses = dict[str, torch.Tensor]


def combine_losses(
    label_loss: torch.Tensor, rationale_loss: torch.Tensor | None, rationale_weight: float = 1.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """``L_label + lambda * L_rationale`` (the paper), or ``alpha * L_label + (1 - alpha) * L_rationale``
    (the official code) when ``alpha`` is given. Without a rationale loss: ``L_label`` (scaled by alpha)."""
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method.alpha={alpha} must lie in [0, 1]")
        return alpha * label_loss + ((1.0 - alpha) * rationale_loss if rationale_loss is not None else 0.0)
    return label_loss if rationale_loss is None else label_loss + rationale_weight * rationale_loss


def plain_task_loss(model: torch.nn.Module, task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for one task batch."""
    return model(input_ids=task["input_ids"], attention_mask=task["attention_mask"], labels=task["labels"]).loss


def logits_at(
    model: torch.nn.Module, positions: torch.Tensor, width: int, target_only: bool, **inputs: Any
) -> torch.Tensor:
    """``model(**inputs)``'s logits at ``positions`` (``(n, 2)`` rows and columns of a ``width``-wide
    output), ``(n, vocab)``; ``target_only``: the output projection computes nothing else."""
    rows, cols = positions.unbind(1)
    flat_positions = rows * width + cols
    if not target_only:
        logits = model(**inputs).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, flat_positions)

    def gather(_module: torch.nn.Module, args: tuple) -> tuple:  # the projection's input: those positions only
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat_positions), *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        return model(**inputs).logits
    finally:
        handle.remove()


def _cross_entropy(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target_ids, reduction="none")


def task_losses(model: torch.nn.Module, tasks: Mapping[str, Mapping[str, torch.Tensor]]) -> Losses:
    """Each task's :func:`plain_task_loss`, the output projection at target positions only. seq2seq:
    the decoder reads the labels shifted right (as for the model's own loss) and positions index
    ``labels``' columns; causal: positions (one column left of each target) index ``input_ids``'."""
    losses = {}
    for name, task in tasks.items():
        inputs = {"input_ids": task["input_ids"], "attention_mask": task["attention_mask"]}
        if kind_of(model) == CAUSAL:
            width = task["input_ids"].shape[1]
        else:
            width = task["labels"].shape[1]
            inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=task["labels"])
        logits = logits_at(model, task["target_positions"], width, True, **inputs)
        losses[name] = _cross_entropy(logits, task["target_ids"]).mean()
    return losses


def attention_mask_for(model: torch.nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """A boolean ``(rows, 1, q, k)`` mask in the form the model's attention takes a custom mask:
    as is for SDPA, additive for eager attention; other kernels (flash attention) take none."""
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"attention implementation {implementation!r} takes no custom 4D mask: method.shared_input "
                     "needs sdpa or eager attention for a causal student")


def _means(token_losses: torch.Tensor, sizes: dict[str, int]) -> Losses:
    parts = token_losses.split(list(sizes.values()))
    return {name: part.mean() for name, part in zip(sizes, parts) if part.numel()}


def _shared_causal_losses(model: torch.nn.Module, shared: Mapping[str, torch.Tensor], target_only: bool) -> Losses:
    """One forward over the branch layout: x, then each task's branch, kept apart by the mask."""
    positions = torch.cat([shared["label_positions"], shared["rationale_positions"]])
    mask = attention_mask_for(model, shared["attention_mask"])
    logits = logits_at(model, positions, shared["input_ids"].shape[1], target_only, input_ids=shared["input_ids"],
                       position_ids=shared["position_ids"], attention_mask=mask)
    sizes = {name: shared[f"{name}_ids"].shape[0] for name in ("label", "rationale")}
    return _means(_cross_entropy(logits, torch.cat([shared["label_ids"], shared["rationale_ids"]])), sizes)


def shared_task_losses(model: torch.nn.Module, batch: Mapping[str, Any], target_only: bool = True) -> Losses:
    """Each task's loss of a shared-input batch, x computed once (a task without targets in the
    batch is left out); ``target_only``: the output projection at target positions only."""
    if kind_of(model) == CAUSAL:
        return _shared_causal_losses(model, batch["shared"], target_only)
    # seq2seq: one encoder pass over x, read by each task's decoder pass (its marker, then its target)
    mask = batch["shared"]["attention_mask"]
    encoded = BaseModelOutput(last_hidden_state=model.get_encoder()(
        input_ids=batch["shared"]["input_ids"], attention_mask=mask).last_hidden_state)
    tasks = {name: batch[name] for name in ("label", "rationale") if name in batch}
    token_losses = []
    for task in tasks.values():
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=task["decoder_sequence"])
        logits = logits_at(model, task["target_positions"], task["labels"].shape[1], target_only,
                           encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=decoder_input_ids)
        token_losses.append(_cross_entropy(logits, task["target_ids"]))
    return _means(torch.cat(token_losses), {name: task["target_ids"].shape[0] for name, task in tasks.items()})


def unshared_task_losses(model: torch.nn.Module, batch: Mapping[str, Any], pad_token_id: int) -> Losses:
    """The model's own loss per task for the same tokens in the same layout, x computed once per task:
    what :func:`shared_task_losses` equals (and the fallback when a model cannot take the branch mask)."""
    if kind_of(model) == CAUSAL:
        return {name: plain_task_loss(model, task)
                for name, task in unshared_causal_tasks(batch["shared"], pad_token_id).items()}
    shared = batch["shared"]
    return {
        name: model(input_ids=shared["input_ids"], attention_mask=shared["attention_mask"],
                    decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=batch[name]["decoder_sequence"]),
                    labels=batch[name]["labels"]).loss
        for name in ("label", "rationale") if name in batch and batch[name]["target_ids"].numel()
    }


def loss_tolerance(model: torch.nn.Module) -> float:
    """The relative difference two exact ways of computing a loss may show: 1e-3 in full precision, two
    machine epsilons under 16-bit autocast (bf16: 1.6e-2), whose matmuls round at every layer."""
    device = next(model.parameters()).device.type
    if not torch.is_autocast_enabled(device):
        return 1e-3
    return max(1e-3, 2 * torch.finfo(torch.get_autocast_dtype(device)).eps)


def _disagreement(
    model: torch.nn.Module, fast: Callable[[], Losses], reference: Callable[[], Losses],
    further: Callable[[], str | None] | None = None,
) -> str | None:
    """On one batch, in eval mode and without gradients: None where ``fast()`` gives ``reference()``'s
    losses (to :func:`loss_tolerance`) and ``further()`` finds nothing, else why not. Any error is a
    disagreement: the caller then takes the reference path."""
    was_training = model.training
    rtol = loss_tolerance(model)
    model.eval()
    try:
        with torch.no_grad():
            got, want = fast(), reference()
            if got.keys() != want.keys():
                return f"tasks {sorted(got)} on the fast path, {sorted(want)} on the reference one"
            for name, loss in want.items():
                if not torch.allclose(got[name].float(), loss.float(), rtol=rtol, atol=1e-5):
                    return f"{name} loss {float(got[name]):.6f} on the fast path, {float(loss):.6f} on the other"
            return further() if further else None
    except Exception as err:  # noqa: BLE001 - any failure means: take the reference path
        return f"{type(err).__name__}: {err}"
    finally:
        model.train(was_training)


def fast_losses_agree(model: torch.nn.Module, tasks: Mapping[str, Mapping[str, torch.Tensor]]) -> str | None:
    """None where :func:`task_losses` gives the model's own losses on ``tasks``, else why not (a model
    that transforms logits after its output projection, or has none, cannot take target-only logits)."""
    return _disagreement(model, lambda: task_losses(model, tasks),
                         lambda: {name: plain_task_loss(model, task) for name, task in tasks.items()})


def _branches_leak(model: torch.nn.Module, shared: Mapping[str, torch.Tensor]) -> str | None:
    """Why a causal branch's loss moves when every token of the other branch changes (it must not, to
    the last bit or near it: their keys are masked out), or None."""
    base = _shared_causal_losses(model, shared, True)
    spans = shared["spans"].to(shared["input_ids"].device)
    columns = torch.arange(shared["input_ids"].shape[1], device=spans.device)
    for branch, other in ((1, "rationale"), (2, "label")):  # the branch changed: 1 label, 2 rationale
        if other not in base:
            continue
        start = spans[:, 0] + (spans[:, 1] if branch == 2 else 0)
        inside = (columns >= start[:, None]) & (columns < (start + spans[:, branch])[:, None])
        ids = shared["input_ids"].clone()
        ids[inside] = (ids[inside] + 1) % model.config.vocab_size
        changed = _shared_causal_losses(model, {**shared, "input_ids": ids}, True)
        if not torch.allclose(changed[other].float(), base[other].float(), rtol=1e-5, atol=1e-7):
            return (f"the {other} loss moves ({float(base[other]):.6f} -> {float(changed[other]):.6f}) when the other "
                    "branch changes: the attention does not keep the branches apart")
    return None


def shared_losses_agree(
    model: torch.nn.Module, batch: Mapping[str, Any], pad_token_id: int, target_only: bool = True
) -> str | None:
    """None where :func:`shared_task_losses` gives :func:`unshared_task_losses` and (causal) a branch's
    loss does not move when the other branch changes, else why not."""
    leak = (lambda: _branches_leak(model, batch["shared"])) if kind_of(model) == CAUSAL else None
    return _disagreement(model, lambda: shared_task_losses(model, batch, target_only),
                         lambda: unshared_task_losses(model, batch, pad_token_id), leak)
