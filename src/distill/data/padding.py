"""Token-id rows -> padded tensors, each batch as wide as its longest row;
labels -100 but on targets, whose places are found on the host (:func:`locate_targets`). A ``seq2seq`` task:
:func:`pad_task`; a ``causal`` one: ``prompt + completion`` rows (:func:`pad_causal_task`), or the prompts
alone, left-padded (:func:`pad_sequences` with ``left``), to generate from."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["IGNORE_INDEX", "locate_targets", "pad_causal_task", "pad_sequences", "pad_task"]

#: label id that the loss ignores (padding, and rows without a target for this task)
IGNORE_INDEX = -100


def pad_sequences(sequences: Sequence[Sequence[int]], pad_token_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token-id rows padded with ``pad_token_id`` to the
    longest, on the right or, with ``left``, on the left."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        columns = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, columns] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[row, columns] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def locate_targets(label_ids: torch.Tensor, column_shift: int = 0) -> dict[str, torch.Tensor]:
    """``target_positions`` (row, column of the output predicting each target token, i.e. each id
    other than -100: its own column + ``column_shift``) and ``target_ids``, in row-major order."""
    is_target = label_ids != IGNORE_INDEX
    positions = is_target.nonzero()
    if column_shift:
        positions[:, 1] += column_shift
    return {"target_positions": positions, "target_ids": label_ids[is_target]}


def pad_task(inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_token_id: int,
             with_targets: bool = False) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` right-padded with ``pad_token_id``; ``labels`` with -100;
    with ``with_targets``, also ``target_positions`` and ``target_ids``."""
    batch = pad_sequences(inputs, pad_token_id)
    label_width = max(1, max(len(ids) for ids in labels))
    label_ids = torch.full((len(labels), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, target in enumerate(labels):
        label_ids[row, : len(target)] = torch.as_tensor(target, dtype=torch.long)
    batch["labels"] = label_ids
    if with_targets:
        batch.update(locate_targets(label_ids))
    return batch


def pad_causal_task(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_token_id: int,
                    with_targets: bool = False) -> dict[str, torch.Tensor]:
    """``prompt + completion`` rows right-padded; ``labels`` -100 but on completion tokens; with
    ``with_targets``, ``target_positions`` (row, column of the output predicting each completion
    token: its own column - 1) and ``target_ids``."""
    if not all(prompts):
        raise ValueError("a causal student's prompt needs at least one token (encode_inputs gives one)")
    batch = pad_sequences([list(p) + list(c) for p, c in zip(prompts, completions)], pad_token_id)
    label_ids = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        label_ids[row, len(prompt) : len(prompt) + len(completion)] = torch.as_tensor(completion, dtype=torch.long)
    batch["labels"] = label_ids
    if with_targets:
        batch.update(locate_targets(label_ids, column_shift=-1))
    return batch
