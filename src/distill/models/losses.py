"""The task losses of a training step and how they combine (:func:`combine_losses`). A task's loss is the
mean cross-entropy over its target tokens, the model's own ``loss`` (:func:`plain_task_loss`, the plain
path); :func:`task_losses` computes the same numbers with the speed levers ``target_only_logits`` (the
vocabulary projection at target positions only) and ``stack_tasks`` (both tasks in one forward), exact to
float rounding (``tests/test_losses.py``). :func:`shared_task_losses` is the shared-input layout's, and
:func:`unshared_task_losses` its yardstick (``tests/test_shared_input.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from distill.data.collate import IGNORE_INDEX
from distill.data.shared_input import unshared_causal_tasks
from distill.models.student import CAUSAL, kind_of

__all__ = [
    "MODEL_INPUTS",
    "combine_losses",
    "head_sees_only",
    "plain_task_loss",
    "shared_losses_agree",
    "shared_task_losses",
    "stack_task_batches",
    "target_logits",
    "task_losses",
    "fast_losses_agree",
    "unshared_task_losses",
]

#: the keys of a task batch that the model itself takes (the rest index the targets)
MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def combine_losses(
    label_loss: torch.Tensor,
    rationale_loss: torch.Tensor | None,
    rationale_weight: float = 1.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """``L_label + lambda * L_rationale`` (the paper), or ``alpha * L_label + (1 - alpha) * L_rationale``
    (the official code) when ``alpha`` is given. Without a rationale loss: ``L_label`` (scaled by alpha)."""
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method.alpha={alpha} must lie in [0, 1]")
        return alpha * label_loss + ((1.0 - alpha) * rationale_loss if rationale_loss is not None else 0.0)
    if rationale_loss is None:
        return label_loss
    return label_loss + rationale_weight * rationale_loss


def plain_task_loss(model: torch.nn.Module, task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for one task batch: today's eager path, and the yardstick of the fast one."""
    return model(**{key: task[key] for key in MODEL_INPUTS}).loss


@contextmanager
def head_sees_only(model: torch.nn.Module, flat_positions: torch.Tensor) -> Iterator[None]:
    """Inside, the model's output projection receives only the hidden states at ``flat_positions``
    (indices into rows x length) and so returns ``(len(flat_positions), vocab)`` logits."""

    def gather(_module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat_positions), *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def target_logits(
    model: torch.nn.Module, task: Mapping[str, torch.Tensor], target_only: bool = True
) -> torch.Tensor:
    """Logits at the target positions of a task batch, ``(targets, vocab)``, in ``target_ids``
    order. ``target_only``: the output projection computes nothing else.

    seq2seq: the decoder reads the labels shifted right (as when the model is given ``labels``
    itself) and positions index ``labels``' columns. causal: the model reads ``prompt +
    completion`` and positions (already one column left of each target) index its columns."""
    rows, cols = task["target_positions"].unbind(1)
    inputs = {"input_ids": task["input_ids"], "attention_mask": task["attention_mask"]}
    if kind_of(model) == CAUSAL:
        width = task["input_ids"].shape[1]
    else:
        width = task["labels"].shape[1]
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=task["labels"])
    flat_positions = rows * width + cols
    with head_sees_only(model, flat_positions) if target_only else nullcontext():
        logits = model(**inputs).logits
    return logits if target_only else logits.reshape(-1, logits.shape[-1]).index_select(0, flat_positions)


def _pad_width(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value) if tensor.shape[1] < width else tensor


def stack_task_batches(tasks: Sequence[Mapping[str, torch.Tensor]], pads: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Several task batches as one: rows concatenated, each tensor named in ``pads`` right-padded
    with its value to the widest, target positions shifted to their rows in the stack. Shapes come
    from tensor sizes alone, so stacking never waits on the device."""
    widths = {key: max(task[key].shape[1] for task in tasks) for key in pads}
    offsets, row = [], 0
    for task in tasks:
        offsets.append(row)
        row += task["labels"].shape[0]
    # rows move down by the rows stacked above them; a Python-int add, so no host-to-device copy
    positions = [
        torch.stack((task["target_positions"][:, 0] + offset, task["target_positions"][:, 1]), dim=1)
        for task, offset in zip(tasks, offsets)
    ]
    return {
        **{key: torch.cat([_pad_width(t[key], widths[key], value) for t in tasks]) for key, value in pads.items()},
        "target_positions": torch.cat(positions),
        "target_ids": torch.cat([t["target_ids"] for t in tasks]),
    }


def task_pads(pad_token_id: int) -> dict[str, int]:
    """What each tensor of a task batch (:mod:`distill.data.collate`) is padded with when stacked."""
    return {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}


#: what each tensor of a decoder task batch (:func:`distill.data.shared_input.pad_decoder_task`) is padded with
DECODER_PADS = {"decoder_sequence": IGNORE_INDEX, "labels": IGNORE_INDEX}


def task_losses(
    model: torch.nn.Module,
    tasks: Mapping[str, Mapping[str, torch.Tensor]],
    pad_token_id: int,
    stack: bool = True,
    target_only: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean target-token cross-entropy of each task; with ``stack``, all tasks in one forward
    pass; with ``target_only``, the output projection runs on target positions alone."""
    groups = [list(tasks)] if stack else [[name] for name in tasks]
    losses: dict[str, torch.Tensor] = {}
    for group in groups:
        parts = [tasks[name] for name in group]
        batch = stack_task_batches(parts, task_pads(pad_token_id)) if len(parts) > 1 else parts[0]
        token_losses = F.cross_entropy(target_logits(model, batch, target_only).float(), batch["target_ids"], reduction="none")
        sizes = [part["target_ids"].shape[0] for part in parts]
        for name, part_losses in zip(group, token_losses.split(sizes)):
            losses[name] = part_losses.mean()
    return losses


def loss_tolerance(model: torch.nn.Module) -> float:
    """The relative difference two exact ways of computing a loss may show: 1e-3 in full precision, two
    machine epsilons under 16-bit autocast (bf16: 1.6e-2), whose matmuls round at every layer."""
    device = next(model.parameters()).device.type
    if not torch.is_autocast_enabled(device):
        return 1e-3
    return max(1e-3, 2 * torch.finfo(torch.get_autocast_dtype(device)).eps)


def fast_losses_agree(
    model: torch.nn.Module,
    tasks: Mapping[str, Mapping[str, torch.Tensor]],
    pad_token_id: int,
    stack: bool,
    target_only: bool,
    rtol: float = 1e-3,
) -> str | None:
    """Check the fast path against the model's own loss on one batch (eval mode, no gradient):
    None when they agree, else why not. A model that transforms logits after its output
    projection (or has none) cannot take target-only logits; the caller falls back to plain."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fast = task_losses(model, tasks, pad_token_id, stack, target_only)
            for name, task in tasks.items():
                plain = plain_task_loss(model, task)
                if not torch.allclose(fast[name].float(), plain.float(), rtol=max(rtol, loss_tolerance(model)), atol=1e-5):
                    return f"{name} loss {float(fast[name]):.6f} on the fast path, {float(plain):.6f} from the model"
    except Exception as err:  # noqa: BLE001 - any failure means: use the plain path
        return f"{type(err).__name__}: {err}"
    finally:
        model.train(was_training)
    return None


# ---------------------------------------------------------------------- the shared-input layout
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


def _means(token_losses: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    parts = token_losses.split(list(sizes.values()))
    return {name: part.mean() for name, part in zip(sizes, parts) if part.numel()}


def _cross_entropy(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target_ids, reduction="none")


def _shared_causal_losses(model: torch.nn.Module, shared: Mapping[str, torch.Tensor], target_only: bool) -> dict[str, torch.Tensor]:
    sizes = {name: shared[f"{name}_ids"].shape[0] for name in ("label", "rationale")}
    rows, cols = torch.cat([shared["label_positions"], shared["rationale_positions"]]).unbind(1)
    flat_positions = rows * shared["input_ids"].shape[1] + cols
    inputs = {"input_ids": shared["input_ids"], "position_ids": shared["position_ids"],
              "attention_mask": attention_mask_for(model, shared["attention_mask"])}
    with head_sees_only(model, flat_positions) if target_only else nullcontext():
        logits = model(**inputs).logits
    if not target_only:
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, flat_positions)
    return _means(_cross_entropy(logits, torch.cat([shared["label_ids"], shared["rationale_ids"]])), sizes)


def _decoder_logits(
    model: torch.nn.Module, encoder_outputs: Any, attention_mask: torch.Tensor, task: Mapping[str, torch.Tensor],
    target_only: bool,
) -> torch.Tensor:
    """Logits at a decoder task's target positions, the encoder output given."""
    rows, cols = task["target_positions"].unbind(1)
    flat_positions = rows * task["labels"].shape[1] + cols
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=task["decoder_sequence"])
    with head_sees_only(model, flat_positions) if target_only else nullcontext():
        logits = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                       decoder_input_ids=decoder_input_ids).logits
    return logits if target_only else logits.reshape(-1, logits.shape[-1]).index_select(0, flat_positions)


def _shared_seq2seq_losses(
    model: torch.nn.Module, batch: Mapping[str, Any], stack: bool, target_only: bool
) -> dict[str, torch.Tensor]:
    from transformers.modeling_outputs import BaseModelOutput

    encoder_inputs = batch["shared"]
    hidden = model.get_encoder()(input_ids=encoder_inputs["input_ids"],
                                 attention_mask=encoder_inputs["attention_mask"]).last_hidden_state
    names = [name for name in ("label", "rationale") if name in batch]
    sizes = {name: batch[name]["target_ids"].shape[0] for name in names}
    if stack and len(names) > 1:
        task = stack_task_batches([batch[name] for name in names], DECODER_PADS)
        encoded = BaseModelOutput(last_hidden_state=hidden.repeat(len(names), 1, 1))
        mask = encoder_inputs["attention_mask"].repeat(len(names), 1)
        logits = _decoder_logits(model, encoded, mask, task, target_only)
        return _means(_cross_entropy(logits, task["target_ids"]), sizes)
    encoded = BaseModelOutput(last_hidden_state=hidden)
    token_losses = [
        _cross_entropy(_decoder_logits(model, encoded, encoder_inputs["attention_mask"], batch[name], target_only),
                       batch[name]["target_ids"])
        for name in names
    ]
    return _means(torch.cat(token_losses), sizes)


def shared_task_losses(
    model: torch.nn.Module, batch: Mapping[str, Any], stack: bool = False, target_only: bool = True
) -> dict[str, torch.Tensor]:
    """Mean target-token cross-entropy of each task of a shared-input batch, x computed once: one
    forward over the branch layout (causal), or one encoder pass read by both decoder passes
    (seq2seq; with ``stack``, one decoder pass over both tasks' rows). A task without targets in
    the batch is left out."""
    if kind_of(model) == CAUSAL:
        return _shared_causal_losses(model, batch["shared"], target_only)
    return _shared_seq2seq_losses(model, batch, stack, target_only)


def unshared_task_losses(model: torch.nn.Module, batch: Mapping[str, Any], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The model's own loss per task for the same tokens in the same layout, x computed once per task:
    what :func:`shared_task_losses` equals (and the fallback when a model cannot take the branch mask)."""
    if kind_of(model) == CAUSAL:
        return {name: plain_task_loss(model, task)
                for name, task in unshared_causal_tasks(batch["shared"], pad_token_id).items()}
    encoder_inputs = batch["shared"]
    return {
        name: model(input_ids=encoder_inputs["input_ids"], attention_mask=encoder_inputs["attention_mask"],
                    decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=batch[name]["decoder_sequence"]),
                    labels=batch[name]["labels"]).loss
        for name in ("label", "rationale") if name in batch and batch[name]["target_ids"].numel()
    }


def _with_branch_changed(shared: Mapping[str, torch.Tensor], branch: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """A causal shared batch whose ``branch`` (1 label, 2 rationale) has every token replaced."""
    spans = shared["spans"].to(shared["input_ids"].device)
    start = spans[:, 0] + (spans[:, 1] if branch == 2 else 0)
    columns = torch.arange(shared["input_ids"].shape[1], device=spans.device)
    inside = (columns >= start[:, None]) & (columns < (start + spans[:, branch])[:, None])
    ids = shared["input_ids"].clone()
    ids[inside] = (ids[inside] + 1) % vocab_size
    return {**shared, "input_ids": ids}


def _branches_leak(model: torch.nn.Module, batch: Mapping[str, Any], base: Mapping[str, torch.Tensor]) -> str | None:
    """Whether a causal branch's loss moves when the other branch's tokens change (it must not:
    its keys are masked out, so the loss stays the same to the last bit or near it)."""
    for branch, other in ((1, "rationale"), (2, "label")):
        if other not in base:
            continue
        changed = _shared_causal_losses(model, _with_branch_changed(batch["shared"], branch, model.config.vocab_size), True)
        if not torch.allclose(changed[other].float(), base[other].float(), rtol=1e-5, atol=1e-7):
            return (f"the {other} loss moves ({float(base[other]):.6f} -> {float(changed[other]):.6f}) when the other "
                    "branch changes: the attention does not keep the branches apart")
    return None


def shared_losses_agree(
    model: torch.nn.Module, batch: Mapping[str, Any], pad_token_id: int, stack: bool, target_only: bool,
    rtol: float = 1e-3,
) -> str | None:
    """Check the shared pass on one batch (eval mode, no gradient): its losses equal
    :func:`unshared_task_losses` (to ``rtol``: low precision rounds differently), and, causal, a
    branch's loss does not move when the other branch changes. None when so, else why not (the
    caller then computes the unshared way)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shared = shared_task_losses(model, batch, stack, target_only)
            unshared = unshared_task_losses(model, batch, pad_token_id)
            if shared.keys() != unshared.keys():
                return f"tasks {sorted(shared)} from the shared pass, {sorted(unshared)} from separate ones"
            for name, loss in unshared.items():
                if not torch.allclose(shared[name].float(), loss.float(), rtol=max(rtol, loss_tolerance(model)), atol=1e-5):
                    return f"{name} loss {float(shared[name]):.6f} in one pass, {float(loss):.6f} in separate ones"
            if kind_of(model) == CAUSAL:
                return _branches_leak(model, batch, _shared_causal_losses(model, batch["shared"], True))
    except Exception as err:  # noqa: BLE001 - any failure means: compute the unshared way
        return f"{type(err).__name__}: {err}"
    finally:
        model.train(was_training)
    return None
