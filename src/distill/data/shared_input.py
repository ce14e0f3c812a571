"""The shared-input layout of step-by-step (``method.shared_input=true``; docs/students.md): the task marker
after x, so both tasks read x once. ``causal``: one row ``x | m_label y | m_rationale r | pad`` whose
branches see x and themselves only (:func:`branch_attention_mask`), positions continuing from x
(:func:`pad_shared_causal`). ``seq2seq``: the encoder reads x alone; each decoder sequence starts with its
marker (:func:`pad_decoder_task`). :func:`unshared_causal_tasks`, the same tokens in separate passes, is
the yardstick of tests and of the first training step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill.data.padding import IGNORE_INDEX, locate_targets, pad_causal_task, pad_sequences

__all__ = ["branch_attention_mask", "pad_decoder_task", "pad_shared_causal", "unshared_causal_tasks"]


def branch_attention_mask(spans: torch.Tensor, width: int) -> torch.Tensor:
    """``(rows, 1, width, width)`` bool, True where a query may attend to a key, for rows laid out
    ``x | branch 1 | branch 2 | pad`` with ``spans[row] = (len x, len branch 1, len branch 2)``:
    causal within x and within each branch, each branch sees all of x, padding sees itself."""
    index = torch.arange(width)
    x_end = spans[:, 0:1]
    first_end = x_end + spans[:, 1:2]
    second_end = first_end + spans[:, 2:3]
    # which part each column is: 0 x, 1 first branch, 2 second branch, 3 padding
    part = (index >= x_end).long() + (index >= first_end).long() + (index >= second_end).long()
    query, key = part[:, :, None], part[:, None, :]
    causal = index[None, :, None] >= index[None, None, :]
    real = query < 3
    allowed = causal & real & ((key == 0) | (query == key))
    allowed |= torch.eye(width, dtype=torch.bool)[None]
    return allowed[:, None]


def pad_shared_causal(inputs: Sequence[Sequence[int]], label_marker: Sequence[int], labels: Sequence[Sequence[int]],
                      rationale_marker: Sequence[int], rationales: Sequence[Sequence[int]],
                      pad_token_id: int) -> dict[str, Any]:
    """One causal train batch of both tasks: ``input_ids``, ``attention_mask`` (the 4D branch mask),
    ``position_ids``, ``spans`` (rows x (len x, len label branch, len rationale branch)), and per
    task ``{task}_positions``/``{task}_ids`` (where each target token is predicted, and the token).
    A row without a rationale has no rationale branch; a row without a label, no label branch."""
    rows, spans = [], []
    for x, y, r in zip(inputs, labels, rationales):
        if not x:
            raise ValueError("a causal student's prompt needs at least one token (encode_inputs gives one)")
        label_branch = [*label_marker, *y] if y else []
        rationale_branch = [*rationale_marker, *r] if r else []
        rows.append([*x, *label_branch, *rationale_branch])
        spans.append((len(x), len(label_branch), len(rationale_branch)))
    batch = pad_sequences(rows, pad_token_id)
    width = batch["input_ids"].shape[1]
    span_tensor = torch.tensor(spans, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    task_labels = {name: torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
                   for name in ("label", "rationale")}
    for row, ((n, n_label, n_rationale), y, r) in enumerate(zip(spans, labels, rationales)):
        positions = [*range(n + n_label), *range(n, n + n_rationale)]
        position_ids[row, : len(positions)] = torch.as_tensor(positions, dtype=torch.long)
        y_start, r_start = n + len(label_marker), n + n_label + len(rationale_marker)
        task_labels["label"][row, y_start : y_start + len(y)] = torch.as_tensor(y, dtype=torch.long)
        task_labels["rationale"][row, r_start : r_start + len(r)] = torch.as_tensor(r, dtype=torch.long)
    out: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": branch_attention_mask(span_tensor, width),
                           "position_ids": position_ids, "spans": span_tensor}
    for name, label_ids in task_labels.items():
        targets = locate_targets(label_ids, column_shift=-1)
        out[f"{name}_positions"], out[f"{name}_ids"] = targets["target_positions"], targets["target_ids"]
    return out


def unshared_causal_tasks(batch: dict[str, Any], pad_token_id: int) -> dict[str, dict[str, torch.Tensor]]:
    """The same tokens as two ordinary causal task batches (``x m_label y`` and ``x m_rationale r``,
    :func:`distill.data.padding.pad_causal_task`): what the shared pass must equal. A task is
    present when some row has its branch."""
    ids, spans = batch["input_ids"], batch["spans"].tolist()
    tasks: dict[str, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(("label", "rationale")):
        predicted = batch[f"{name}_positions"]
        if not predicted.shape[0]:
            continue
        prompts, completions = [], []
        for row, (n, n_label, _) in enumerate(spans):
            start = n if index == 0 else n + n_label
            branch = ids[row, start : start + spans[row][1 + index]].tolist()
            columns = predicted[predicted[:, 0] == row, 1] + 1  # the target tokens' own columns
            marker = int(columns.min()) - start if columns.numel() else len(branch)
            prompts.append(ids[row, :n].tolist() + branch[:marker])
            completions.append(branch[marker:])
        tasks[name] = pad_causal_task(prompts, completions, pad_token_id, with_targets=True)
    return tasks


def pad_decoder_task(marker: Sequence[int], targets: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """A seq2seq task's decoder side: ``decoder_sequence`` (``marker + target`` per row, -100 padded:
    the model shifts it right into its decoder input), ``labels`` (the same with the marker -100:
    the loss is on the target alone), ``target_positions`` (their own columns) and ``target_ids``.
    A row without a target has an all -100 row."""
    width = max(1, max(len(marker) + len(t) for t in targets))
    sequence = torch.full((len(targets), width), IGNORE_INDEX, dtype=torch.long)
    labels = torch.full((len(targets), width), IGNORE_INDEX, dtype=torch.long)
    for row, target in enumerate(targets):
        if target:
            sequence[row, : len(marker) + len(target)] = torch.as_tensor([*marker, *target], dtype=torch.long)
            labels[row, len(marker) : len(marker) + len(target)] = torch.as_tensor(target, dtype=torch.long)
    return {"decoder_sequence": sequence, "labels": labels, **locate_targets(labels)}
