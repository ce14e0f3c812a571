"""Trained students out of their runs: load a checkpoint, export it for plain transformers."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)

from distill.models.inference import SETTINGS_FILE, InferenceSettings
from distill.models.loaders import prepare_causal_tokenizer
from distill.models.model_card import write_model_card
from distill.models.module import DistillModule
from distill.models.student import CAUSAL, SEQ2SEQ, student_from_architecture
from distill.utils.paths import check_local_path

#: the transformers class that loads an exported student of each kind
AUTO_CLASSES = {SEQ2SEQ: AutoModelForSeq2SeqLM, CAUSAL: AutoModelForCausalLM}


def load_module(ckpt_path: str | Path) -> DistillModule:
    """A DistillModule from a Lightning checkpoint. The student rebuilds from the architecture saved
    in it and takes its weights from it alone; a checkpoint without one (written before it was
    saved) rebuilds through the student's loader, which loads the pretrained weights first."""
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (a checkpoint written by train.py)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: is a directory, not a checkpoint file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    architecture = checkpoint.get("student_architecture")
    if architecture is None:
        return DistillModule.load_from_checkpoint(str(path), map_location="cpu")
    hparams = dict(checkpoint["hyper_parameters"])
    student = student_from_architecture(architecture, **dict(hparams["model"]))
    module = DistillModule(**hparams, student=student)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module._architecture = architecture
    return module


def run_config_of(ckpt_path: str | Path) -> DictConfig | None:
    """The Hydra config of the run a checkpoint came from (``<run>/checkpoints/x.ckpt`` -> ``<run>/.hydra``)."""
    config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else None


def plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """The student as a plain transformers model: a LoRA (peft) student merged into a copy of its
    base weights (the module's own model is left as it is); any other student as it is."""
    return copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model


def export_student(module: DistillModule, out_dir: str | Path, run: dict | None = None) -> Path:
    """``save_pretrained`` the student (LoRA merged in), its tokenizer, ``distill.json`` (kind, prefixes, lengths,
    method) and a model card (:func:`~distill.models.model_card.write_model_card`; ``run``: its ``results.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain_model(module.model).save_pretrained(out)
    module.tokenizer.save_pretrained(out)
    module.settings.save(out)
    write_model_card(out, module, run)
    return out


def auto_class_name(path: str | Path) -> str:
    """``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM``: what loads the student exported to ``path``."""
    return AUTO_CLASSES[InferenceSettings.load(path).kind].__name__


def load_student_for_inference(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, InferenceSettings]:
    """From a ``.ckpt`` file or an exported directory."""
    check_local_path(path, "a checkpoint or a directory written by distill.export")
    path = Path(path)
    if path.is_file():
        module = load_module(path)
        return module.model, module.tokenizer, module.settings
    settings = InferenceSettings.load(path)
    if not (path / SETTINGS_FILE).is_file():  # a model exported elsewhere: its config tells the kind
        is_seq2seq = getattr(AutoConfig.from_pretrained(str(path)), "is_encoder_decoder", False)
        settings = InferenceSettings(kind=SEQ2SEQ if is_seq2seq else CAUSAL)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AUTO_CLASSES[settings.kind].from_pretrained(str(path))
    if settings.kind == CAUSAL:
        prepare_causal_tokenizer(tokenizer)
    elif tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token
    return model, tokenizer, settings
