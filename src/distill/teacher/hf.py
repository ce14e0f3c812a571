"""``teacher=hf``: a local transformers model as the teacher (causal or seq2seq, via Auto classes).

Prompts are generated in batches of ``batch_size``, grouped by length to waste little padding.
Causal LMs are padded on the left so every row's continuation starts at the same position and
only the new tokens are decoded; seq2seq models decode their whole output. Stop sequences are
applied to the decoded text (the completion is cut before the first one), as an
OpenAI-compatible server would, and generation stops early once every row of a batch has
produced one (transformers' ``stop_strings``). ``model: smollm2`` is SmolLM2-135M-Instruct
converted offline (:mod:`distill.models.smollm2`). ``chat: true`` renders chat messages with the tokenizer's chat
template. Greedy decoding when ``temperature`` is 0; otherwise sampling seeded per batch from
``seed`` (reproducible for the same batches). Several samples of one prompt (``teacher.samples``)
are drawn in one ``generate`` call with ``num_return_sequences``; greedy decoding would give every
sample the same text, so it is decoded once and given to all.

A batch that raises (e.g. out of memory) is retried one prompt at a time; a prompt that still
raises, or whose completion is empty, is reported as a failed item, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from time import monotonic
from typing import Any

from distill.utils.paths import check_local_path
from distill.teacher.backend import Backend, Events, Request, TeacherConfigError, cut_at_stop
from distill.teacher.cache import Answer

log = logging.getLogger(__name__)


class HFBackend(Backend):
    kind = "hf"

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        chat: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 256,
        max_input_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        trust_remote_code: bool = False,
    ):
        if not model:
            raise TeacherConfigError("teacher=hf needs teacher.backend.model (a hub name or a local directory)")
        check_local_path(model, "teacher.backend.model")
        if tokenizer:
            check_local_path(tokenizer, "teacher.backend.tokenizer")
        self.model = str(model)
        self.tokenizer_name = str(tokenizer or model)
        self.chat = bool(chat)
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = int(batch_size)
        self.max_tokens = int(max_tokens)
        self.max_input_tokens = max_input_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.stop = None if stop is None else list(stop)
        self.trust_remote_code = trust_remote_code
        self._lm = None
        self._tok = None
        self.is_seq2seq = False
        self.requests_sent = 0

    def sampling(self) -> dict[str, Any]:
        greedy = self.temperature == 0
        return {"temperature": self.temperature, "top_p": None if greedy else self.top_p,
                "seed": None if greedy else self.seed, "max_tokens": self.max_tokens,
                "max_input_tokens": self.max_input_tokens, "tokenizer": self.tokenizer_name}

    # ----------------------------------------------------------------- loading
    def _load(self) -> None:
        if self._lm is not None:
            return
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        device = self.device_name
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype_name
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
        from distill.models.smollm2 import resolve_model_name

        model_path = resolve_model_name(self.model)
        tokenizer_path = resolve_model_name(self.tokenizer_name)
        try:
            config = AutoConfig.from_pretrained(model_path, trust_remote_code=self.trust_remote_code)
            self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            auto = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
            lm = auto.from_pretrained(model_path, dtype=getattr(torch, dtype),
                                      trust_remote_code=self.trust_remote_code)
            tok = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as e:
            raise TeacherConfigError(f"teacher=hf: cannot load {self.model!r}: {e}") from e
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.sep_token
        if tok.pad_token is None:
            raise TeacherConfigError(f"teacher=hf: tokenizer {self.tokenizer_name!r} has no pad, eos or sep token")
        tok.padding_side = "right" if self.is_seq2seq else "left"
        tok.truncation_side = "left"  # over max_input_tokens: the first exemplars go, the query stays
        if self.chat and not getattr(tok, "chat_template", None):
            raise TeacherConfigError(
                f"teacher.backend.chat=true but tokenizer {self.tokenizer_name!r} has no chat template")
        lm.to(device).eval()
        self._lm, self._tok, self.device = lm, tok, device
        log.info("teacher=hf: %s (%s) on %s, %s", self.model, "seq2seq" if self.is_seq2seq else "causal",
                 device, dtype)

    def _render(self, prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self._tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    # ----------------------------------------------------------------- generating
    def units(self, requests: Sequence[Request], texts: dict[str, str]) -> list[list[Request]]:
        """The requests as they are generated: one unit per prompt holding its samples (in sample
        order), longest prompt first; decoded once per unit (``num_return_sequences`` = its size when
        sampling, one sequence shared by all when greedy)."""
        by_prompt: dict[str, list[Request]] = {}
        for r in requests:
            by_prompt.setdefault(repr((texts[r.key], r.stop)), []).append(r)
        units = [sorted(u, key=lambda r: r.sample) for u in by_prompt.values()]
        return sorted(units, key=lambda u: (self._sequences(u), len(texts[u[0].key])), reverse=True)

    def _sequences(self, unit: Sequence[Request]) -> int:
        return 1 if self.temperature == 0 else len(unit)

    def generate(self, requests: Sequence[Request], events: Events) -> None:
        if not requests:
            return
        self._load()
        texts = {r.key: self._render(r.prompt) for r in requests}
        units = self.units(requests, texts)
        i = 0
        while i < len(units):
            # a batch: units with the same number of sequences, at most batch_size sequences (one unit at least)
            n = self._sequences(units[i])
            take = max(1, self.batch_size // n)
            batch = [u for u in units[i:i + take] if self._sequences(u) == n]
            start = monotonic()
            try:
                answers = self._generate_units(batch, texts, n, seed=self.seed + i)
            except Exception as e:  # noqa: BLE001 - e.g. OOM on a long batch: fall back to one at a time
                if len(batch) == 1:
                    answers = [[Answer(None, f"generation failed: {type(e).__name__}: {e}")] * n]
                else:
                    log.warning("teacher=hf: batch failed (%s: %s); retrying its prompts one by one",
                                type(e).__name__, e)
                    for u in batch:
                        for r in u:
                            events.retried(r, f"batch failed: {type(e).__name__}")
                    answers = []
                    for j, u in enumerate(batch):
                        try:
                            answers += self._generate_units([u], texts, n, seed=self.seed + i + j)
                        except Exception as e1:  # noqa: BLE001
                            answers.append([Answer(None, f"generation failed: {type(e1).__name__}: {e1}",
                                                   attempts=2)] * n)
            latency = round((monotonic() - start) / (len(batch) * n), 4)
            for unit, drawn in zip(batch, answers):
                for s, r in enumerate(unit):
                    a = replace(drawn[s if n > 1 else 0])
                    a.latency_s = latency
                    events.answered(r, a)
            i += len(batch)

    def _generate_units(self, units: Sequence[Sequence[Request]], texts: dict[str, str], n: int,
                        seed: int) -> list[list[Answer]]:
        """``n`` answers per unit (its first request's prompt, ``num_return_sequences=n``)."""
        batch = [u[0] for u in units]
        drawn = self._generate_batch(batch, [texts[r.key] for r in batch], seed=seed, n=n)
        return [drawn[j * n:(j + 1) * n] for j in range(len(units))]

    def _generate_batch(self, batch: Sequence[Request], texts: list[str], seed: int, n: int = 1) -> list[Answer]:
        """``n`` answers per prompt, prompt after prompt."""
        import torch

        tok, lm = self._tok, self._lm
        self.requests_sent += len(batch) * n
        enc = tok(texts, return_tensors="pt", padding=True, truncation=self.max_input_tokens is not None,
                  max_length=self.max_input_tokens).to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_tokens, "pad_token_id": tok.pad_token_id}
        if self.temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
            if n > 1:
                kwargs.update(num_return_sequences=n)
        else:
            kwargs.update(do_sample=False)
        stops = sorted({s for r in batch for s in (r.stop or ()) if s})
        if stops and not self.is_seq2seq:  # stop generating once every row has one (cut_at_stop cuts below)
            kwargs.update(stop_strings=stops, tokenizer=tok)
        with torch.inference_mode():
            out = lm.generate(**enc, **kwargs)
        new = out if self.is_seq2seq else out[:, enc["input_ids"].shape[1]:]
        specials = set(tok.all_special_ids)
        answers = []
        masks = [m for m in enc["attention_mask"].tolist() for _ in range(n)]
        for r, row, mask in zip([r for r in batch for _ in range(n)], new.tolist(), masks):
            n_new = sum(1 for t in row if t not in specials)
            text = cut_at_stop(tok.decode(row, skip_special_tokens=True), r.stop)
            error = None if text.strip() else "empty completion"
            answers.append(Answer(text if error is None else None, error, prompt_tokens=int(sum(mask)),
                                  completion_tokens=n_new, finish_reason="length" if n_new >= self.max_tokens else "stop"))
        return answers
