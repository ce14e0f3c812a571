"""Label (and rationale) generation shared by evaluation, ``distill.predict`` and exported students:
greedy decoding; a seq2seq student decodes from its encoder input, a causal one continues its
left-padded prompt (its output is what it writes after it). A student trained in the shared-input
layout reads x alone, the task's marker after it (appended to the prompt, or the decoder's first tokens)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distill.data.collate import encode_batch
from distill.data.encoding import marker_ids, marker_room
from distill.data.targets import split_single_task_output
from distill.methods import Method, get_method
from distill.models.student import CAUSAL, SEQ2SEQ, kind_of
from distill.utils.precision import DEFAULT_PRECISION, generation_autocast, normalize

SETTINGS_FILE = "distill.json"


@dataclass(frozen=True)
class InferenceSettings:
    """What a trained student needs besides its weights: how inputs are prefixed and how much it may write."""

    method: str = "step_by_step"
    label_prefix: str = "[label] "
    rationale_prefix: str = "[rationale] "
    max_input_length: int = 512
    label_max_new_tokens: int = 32
    rationale_max_new_tokens: int = 128
    #: ``seq2seq`` or ``causal``: which Auto class loads an export (generation reads the model itself)
    kind: str = SEQ2SEQ
    #: the precision the run's own evaluation generated in (:mod:`distill.utils.precision`): generation
    #: runs in it, so a checkpoint or export reproduces the run's predictions
    precision: str = DEFAULT_PRECISION
    #: trained in the shared-input layout: the task marker follows x (``method.shared_input``)
    shared_input: bool = False
    #: ``single_task``: the rationale ``before`` the label (the paper's) or ``after`` it (``method.rationale_position``)
    rationale_position: str = "before"

    @property
    def method_spec(self) -> Method:
        """What the method trains on and generates (:class:`distill.methods.Method`)."""
        return get_method(self.method)

    def save(self, directory: str | Path) -> None:
        (Path(directory) / SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> InferenceSettings:
        path = Path(directory) / SETTINGS_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def in_precision(self, precision: str | None) -> InferenceSettings:
        """These settings generating in ``precision`` instead (None: unchanged)."""
        return self if precision is None else replace(self, precision=normalize(precision))


def task_inputs(settings: InferenceSettings, tokenizer: PreTrainedTokenizerBase, task: str) -> tuple[str, list[int] | None, int]:
    """How a task's input is built, as in training: ``(text prefix, marker ids after x or None,
    token limit of the encoded text)``."""
    prefix = settings.label_prefix if task == "label" else settings.rationale_prefix
    if not settings.shared_input:
        return prefix, None, settings.max_input_length
    room = marker_room(tokenizer, [settings.label_prefix, settings.rationale_prefix], settings.kind)
    return "", marker_ids(tokenizer, prefix), settings.max_input_length - room


@torch.no_grad()
def generate_from_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    max_new_tokens: int, marker: list[int] | None = None,
) -> list[str]:
    """Greedy decoding as the module doc says, special tokens stripped; ``marker``: the shared-input task marker."""
    extra: dict[str, torch.Tensor] = {}
    if marker is not None:
        marker_row = torch.tensor([marker], dtype=input_ids.dtype, device=input_ids.device).expand(len(input_ids), -1)
        if kind_of(model) == CAUSAL:
            input_ids = torch.cat([input_ids, marker_row], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(marker_row, dtype=attention_mask.dtype)], dim=1)
        else:  # the model's own right shift of "marker + one more" is "decoder start + marker"
            extra["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=F.pad(marker_row, (0, 1)))
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                         num_beams=1, do_sample=False, pad_token_id=tokenizer.pad_token_id, **extra)
    if kind_of(model) == CAUSAL:
        out = out[:, input_ids.shape[1] :]
    elif extra:
        out = out[:, extra["decoder_input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]


def generate_from_texts(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], prefix: str, max_input_length: int,
    max_new_tokens: int, batch_size: int = 32, marker: list[int] | None = None,
) -> list[str]:
    """Generations for raw texts, each given ``prefix`` (or, shared-input layout, ``marker`` after it)."""
    # sorted by length so each batch pads little; results go back in input order
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    by_index: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = encode_batch(tokenizer, [prefix + texts[i] for i in chunk], max_input_length, kind_of(model))
        ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
        by_index.update(zip(chunk, generate_from_ids(model, tokenizer, ids, mask, max_new_tokens, marker)))
    return [by_index[i] for i in range(len(texts))]


def labels_from_outputs(
    texts: list[str], method: str | Method, rationale_position: str = "before"
) -> tuple[list[str], list[str | None]]:
    """Labels (and rationales, else None) from label-task outputs: where the method's label holds the
    rationale (``single_task``), both, the rationale ``before`` or ``after`` the label (``rationale_position``)."""
    if not get_method(method).label_holds_rationale:
        return texts, [None] * len(texts)
    pairs = [split_single_task_output(text, rationale_position) for text in texts]
    return [label for _, label in pairs], [rationale for rationale, _ in pairs]


def predict(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: InferenceSettings, inputs: list[str],
    with_rationale: bool = False, batch_size: int = 32,
) -> list[dict[str, str]]:
    """Predictions for raw inputs: ``{"input", "prediction"[, "rationale"]}`` each, generated in
    ``settings.precision`` (what the run generated its own labels in)."""
    model.eval()
    with generation_autocast(settings.precision, model.device.type):
        prefix, marker, limit = task_inputs(settings, tokenizer, "label")
        outputs = generate_from_texts(model, tokenizer, inputs, prefix, limit, settings.label_max_new_tokens,
                                      batch_size, marker)
        labels, rationales = labels_from_outputs(outputs, settings.method_spec, settings.rationale_position)
        if with_rationale and settings.method_spec.rationale_task:
            prefix, marker, limit = task_inputs(settings, tokenizer, "rationale")
            rationales = generate_from_texts(model, tokenizer, inputs, prefix, limit,
                                             settings.rationale_max_new_tokens, batch_size, marker)
    return [{"input": text, "prediction": label, **({"rationale": rationale} if rationale is not None else {})}
            for text, label, rationale in zip(inputs, labels, rationales)]
