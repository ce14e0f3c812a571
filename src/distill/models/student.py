"""A student: a model and its tokenizer, built by the loader ``model.kind`` names (:mod:`distill.models.loaders`),
in a LoRA adapter where ``model.lora`` says so; ``seq2seq`` or ``causal`` (:func:`kind_of`, the one seam the
rest of the code branches on). Checkpoints keep its architecture, which rebuilds it without the loader."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import CONFIG_MAPPING, AutoTokenizer, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from distill.models.loaders import LOADERS
from distill.utils.paths import check_local_path

#: the two kinds of student (:func:`kind_of`)
SEQ2SEQ, CAUSAL = "seq2seq", "causal"


def kind_of(model: torch.nn.Module) -> str:
    """``seq2seq`` for an encoder-decoder, else ``causal`` (from the config, also through a ``peft`` wrapper)."""
    config = getattr(model, "config", None)
    return SEQ2SEQ if getattr(config, "is_encoder_decoder", False) else CAUSAL


@dataclass
class Student:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def kind(self) -> str:
        """``seq2seq`` or ``causal`` (:func:`kind_of`)."""
        return kind_of(self.model)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def apply_lora(
    model: PreTrainedModel, r: int = 8, alpha: float = 16, dropout: float = 0.0,
    target_modules: str | list[str] | None = None,
) -> PreTrainedModel:
    """Wrap ``model`` in a ``peft`` LoRA adapter: only the adapter's parameters train.
    ``target_modules``: module names (``[q_proj, v_proj]``), ``all-linear``, or None for peft's
    default for the architecture (Llama and Qwen: ``q_proj``/``v_proj``; T5: ``q``/``v``)."""
    # imported here: peft takes most of a second to import, and only LoRA students need it
    from peft import LoraConfig, TaskType, get_peft_model

    if target_modules is not None and not isinstance(target_modules, str):
        target_modules = [str(name) for name in target_modules]
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if kind_of(model) == SEQ2SEQ else TaskType.CAUSAL_LM,
        r=int(r), lora_alpha=alpha, lora_dropout=float(dropout), target_modules=target_modules,
    )
    return get_peft_model(model, config)


def load_student(
    kind: str = "auto", name_or_path: str | None = None, short_name: str | None = None,
    gradient_checkpointing: bool = False, lora: Mapping[str, Any] | None = None, decoder_only: bool | None = None,
    **kwargs: Any,
) -> Student:
    """Build the student named in ``conf/model/*.yaml`` (``kind`` names its loader), with a LoRA
    adapter when ``lora`` holds its settings; ``decoder_only`` (where given) must say what it is.
    ``short_name`` names the student in run names and results (the config's, not read here)."""
    if kind not in LOADERS:
        raise ValueError(f"model.kind={kind!r}: expected one of {sorted(LOADERS)}")
    if kind in ("auto", "causal") and not name_or_path:
        raise ValueError(f"model.kind={kind} needs model.name_or_path (a hub name or a local directory)")
    if name_or_path:
        check_local_path(name_or_path, "model.name_or_path")
    model, tokenizer = LOADERS[kind](name_or_path, **kwargs)
    if decoder_only is not None and (kind_of(model) == CAUSAL) != bool(decoder_only):
        raise ValueError(f"model.decoder_only={decoder_only} but model.kind={kind} built a {kind_of(model)} "
                         f"student: set model.decoder_only={kind_of(model) == CAUSAL} (it picks method.shared_input's default)")
    return _finish(model, tokenizer, gradient_checkpointing, lora)


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, gradient_checkpointing: bool,
            lora: Mapping[str, Any] | None) -> Student:
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lora:
        if gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
        model = apply_lora(model, **dict(lora))
    return Student(model=model, tokenizer=tokenizer)


def architecture_of(student: Student) -> dict[str, Any]:
    """What rebuilds ``student`` without its loader (no hub, no package, no pretrained weights to load and
    overwrite), kept by checkpoints (:func:`student_from_architecture`); the weights are the state dict's."""
    base = student.model.get_base_model() if hasattr(student.model, "get_base_model") else student.model
    with tempfile.TemporaryDirectory() as tmp:
        student.tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return {
        "class": type(base).__name__,
        "config": base.config.to_dict(),
        "generation_config": base.generation_config.to_dict(),
        "tokenizer_files": files,
        "padding_side": student.tokenizer.padding_side,
    }


def student_from_architecture(architecture: Mapping[str, Any], gradient_checkpointing: bool = False,
                              lora: Mapping[str, Any] | None = None, **_: Any) -> Student:
    """The student :func:`architecture_of` describes, with freshly initialised weights (a
    checkpoint's state dict replaces them) and the spec's LoRA adapter; the other spec keys
    (``kind``, ``name_or_path``, ``short_name``, loader settings) only mattered for the first build."""
    config_dict = dict(architecture["config"])
    config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in architecture["tokenizer_files"].items():
            (Path(tmp) / name).write_bytes(data)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    tokenizer.padding_side = architecture.get("padding_side", tokenizer.padding_side)
    model = getattr(transformers, architecture["class"])(config)
    model.generation_config = GenerationConfig.from_dict(dict(architecture["generation_config"]))
    return _finish(model, tokenizer, gradient_checkpointing, lora)
