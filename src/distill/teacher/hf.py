"""``teacher=hf``: a local transformers model (causal or seq2seq; ``smollm2``: SmolLM2 converted offline).

Batches of ``batch_size`` sequences, longest prompt first; a batch that raises (out of memory) is retried one
prompt at a time, and a prompt that still raises, or answers nothing, is a failed item."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from time import monotonic
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from distill.models.smollm2 import resolve_model_name
from distill.teacher.backend import Backend, Events, Request, TeacherConfigError, by_prompt, cut_at_stop
from distill.teacher.cache import Answer
from distill.utils.paths import check_local_path

log = logging.getLogger(__name__)


@dataclass(eq=False)
class HFBackend(Backend):
    """The fields are ``teacher.backend``'s keys (conf/teacher/hf.yaml says what each does)."""

    model: str
    tokenizer: str | None = None
    chat: bool = False
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    max_tokens: int = 256
    max_input_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: Sequence[str] | None = None
    trust_remote_code: bool = False
    kind = "hf"

    def __post_init__(self) -> None:
        if not self.model:
            raise TeacherConfigError("teacher=hf needs teacher.backend.model (a hub name or a local directory)")
        check_local_path(self.model, "teacher.backend.model")
        if self.tokenizer:
            check_local_path(self.tokenizer, "teacher.backend.tokenizer")
        self.model, self.tokenizer = str(self.model), str(self.tokenizer or self.model)
        # typed as the cache key has always held them (a CLI override of 1 is the key of 1.0)
        self.temperature, self.top_p, self.seed = float(self.temperature), float(self.top_p), int(self.seed)
        self.batch_size, self.max_tokens = int(self.batch_size), int(self.max_tokens)
        self.is_seq2seq, self.requests_sent = False, 0
        self._lm = self._tok = self._device = None

    def sampling(self) -> dict[str, Any]:
        greedy = self.temperature == 0
        return {"temperature": self.temperature, "top_p": None if greedy else self.top_p,
                "seed": None if greedy else self.seed, "max_tokens": self.max_tokens,
                "max_input_tokens": self.max_input_tokens, "tokenizer": self.tokenizer}

    def _load(self) -> None:
        if self._lm is not None:
            return
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        auto_dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
        dtype = auto_dtype if self.dtype == "auto" else self.dtype
        path, remote = resolve_model_name(self.model), self.trust_remote_code
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
            self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            auto = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
            lm = auto.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=remote)
            tok = AutoTokenizer.from_pretrained(resolve_model_name(self.tokenizer), trust_remote_code=remote)
        except (OSError, ValueError) as e:
            raise TeacherConfigError(f"teacher=hf: cannot load {self.model!r}: {e}") from e
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.sep_token
        if tok.pad_token is None:
            raise TeacherConfigError(f"teacher=hf: tokenizer {self.tokenizer!r} has no pad, eos or sep token")
        tok.padding_side = "right" if self.is_seq2seq else "left"
        tok.truncation_side = "left"  # over max_input_tokens: the first exemplars go, the query stays
        if self.chat and not getattr(tok, "chat_template", None):
            raise TeacherConfigError(f"teacher.backend.chat=true but tokenizer {self.tokenizer!r} has no chat template")
        lm.to(device).eval()
        self._lm, self._tok, self._device = lm, tok, device
        log.info("teacher=hf: %s (%s) on %s, %s", self.model, "seq2seq" if self.is_seq2seq else "causal", device, dtype)

    def generate(self, requests: Sequence[Request], events: Events) -> None:
        if not requests:
            return
        self._load()
        texts = {r.key: r.prompt if isinstance(r.prompt, str) else  # chat messages: through the template
                 self._tok.apply_chat_template(r.prompt, tokenize=False, add_generation_prompt=True) for r in requests}

        def sequences(unit: list[Request]) -> int:  # decoded for a unit: one per sample, or one for all if greedy
            return 1 if self.temperature == 0 else len(unit)

        # a unit per prompt, holding its samples: the most sequences, then the longest prompt, first
        units = sorted(by_prompt(requests, lambda r: texts[r.key]), key=lambda u: (sequences(u), len(texts[u[0].key])),
                       reverse=True)
        i = 0
        while i < len(units):
            # a batch: units with the same number of sequences, at most batch_size sequences (one unit at least)
            n = sequences(units[i])
            batch = [u for u in units[i:i + max(1, self.batch_size // n)] if sequences(u) == n]
            start = monotonic()
            try:
                answers = self._generate(batch, texts, n, seed=self.seed + i)
            except Exception as e:  # noqa: BLE001 - e.g. OOM on a long batch: fall back to one at a time
                answers = [[Answer(None, f"generation failed: {type(e).__name__}: {e}")] * n]
                if len(batch) > 1:
                    log.warning("teacher=hf: batch failed (%s: %s); retrying its prompts one by one",
                                type(e).__name__, e)
                    answers = []
                    for j, u in enumerate(batch):
                        for r in u:
                            events.retried(r, f"batch failed: {type(e).__name__}")
                        try:
                            answers += self._generate([u], texts, n, seed=self.seed + i + j)
                        except Exception as e1:  # noqa: BLE001
                            answers.append([Answer(None, f"generation failed: {type(e1).__name__}: {e1}",
                                                   attempts=2)] * n)
            latency = round((monotonic() - start) / (len(batch) * n), 4)
            for unit, drawn in zip(batch, answers):
                for s, r in enumerate(unit):
                    events.answered(r, replace(drawn[s if n > 1 else 0], latency_s=latency))
            i += len(batch)

    def _generate(self, units: Sequence[Sequence[Request]], texts: dict[str, str], n: int,
                  seed: int) -> list[list[Answer]]:
        """``n`` answers per unit, from its first request's prompt (``num_return_sequences=n``)."""
        tok, batch = self._tok, [u[0] for u in units]
        self.requests_sent += len(batch) * n
        enc = tok([texts[r.key] for r in batch], return_tensors="pt", padding=True,
                  truncation=self.max_input_tokens is not None, max_length=self.max_input_tokens).to(self._device)
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_tokens, "pad_token_id": tok.pad_token_id,
                                  "do_sample": self.temperature > 0}
        if self.temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(temperature=self.temperature, top_p=self.top_p, num_return_sequences=n)
        stops = sorted({s for r in batch for s in (r.stop or ()) if s})
        if stops and not self.is_seq2seq:  # stop generating once every row has one (cut_at_stop cuts below)
            kwargs.update(stop_strings=stops, tokenizer=tok)
        with torch.inference_mode():
            out = self._lm.generate(**enc, **kwargs)
        new = out if self.is_seq2seq else out[:, enc["input_ids"].shape[1]:]
        specials = set(tok.all_special_ids)
        answers = []
        masks = [m for m in enc["attention_mask"].tolist() for _ in range(n)]
        for r, row, mask in zip([r for r in batch for _ in range(n)], new.tolist(), masks):
            n_new = sum(1 for t in row if t not in specials)
            text = cut_at_stop(tok.decode(row, skip_special_tokens=True), r.stop)
            ok = bool(text.strip())
            answers.append(Answer(text if ok else None, None if ok else "empty completion", int(sum(mask)), n_new,
                                  finish_reason="length" if n_new >= self.max_tokens else "stop"))
        return [answers[j * n:(j + 1) * n] for j in range(len(units))]
