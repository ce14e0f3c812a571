"""``teacher=openai``: any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, hosted APIs), via the openai SDK.

The SDK retries timeouts, connection errors and HTTP 408/409/429/5xx (its backoff, honouring Retry-After); this
client re-asks malformed and empty answers, fails an item the server refuses (other 4xx), and stops the run on
401/403/404 and on a teacher that is not there. The API key is read from ``$api_key_env``, never stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import openai

from distill.teacher.backend import Backend, Events, Request, TeacherConfigError, by_prompt, reason_class
from distill.teacher.cache import Answer

log = logging.getLogger(__name__)
for _name in ("openai", "httpx", "httpcore", "httpx2", "httpcore2"):  # the SDK and its HTTP library (by version)
    logging.getLogger(_name).setLevel(logging.WARNING)  # log a line per request or retry: far too many


def read_answers(completion: Any, chat: bool, n: int, latency: float, attempts: int) -> list[Answer]:
    """An Answer per choice (up to ``n``, in index order), sharing the usage out; ValueError if not a completion."""
    try:
        choices = sorted(completion.choices, key=lambda c: getattr(c, "index", None) or 0)[:n]
        read = [((c.message.content if chat else c.text) or "", getattr(c, "finish_reason", None)) for c in choices]
    except (AttributeError, TypeError) as e:
        raise ValueError(f"no choices[].{'message.content' if chat else 'text'} ({e})") from None
    if not read or not all(isinstance(text, str) for text, _ in read):
        raise ValueError("no choices, or a completion that is not text")
    usage, k = getattr(completion, "usage", None), len(read)
    prompt, total = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    return [Answer(text, None, prompt if i == 0 else (None if prompt is None else 0),
                   None if total is None else total // k + (i < total % k), latency, attempts, finish)
            for i, (text, finish) in enumerate(read)]


@dataclass(eq=False)
class OpenAIBackend(Backend):
    """The fields are ``teacher.backend``'s keys (conf/teacher/openai.yaml says what each does)."""

    base_url: str
    model: str
    chat: bool = True
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 6
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: Sequence[str] | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    fail_fast: int = 8
    use_n: bool = True
    kind = "openai"

    def __post_init__(self) -> None:
        if not self.base_url or not self.model:
            raise TeacherConfigError("teacher=openai needs teacher.backend.base_url and teacher.backend.model")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.fail_fast < 0:
            raise TeacherConfigError("teacher: max_concurrency >= 1, max_retries >= 0, timeout_s > 0, fail_fast >= 0")
        self.base_url = self.base_url.rstrip("/")
        # typed as the cache key has always held them (a CLI override of 1 is the key of 1.0)
        self.temperature, self.top_p, self.max_tokens = float(self.temperature), float(self.top_p), int(self.max_tokens)
        self.extra_body = dict(self.extra_body or {})
        self.n_honoured: bool | None = None  # learnt from the first request with n > 1
        self.requests_sent = 0  # HTTP requests, the SDK's retries included
        self._api_key: str | None = None  # only while generate() runs

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.chat else 'completions'}"

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, **{f"extra.{k}": v for k, v in sorted(self.extra_body.items())}}

    def params(self, request: Request, n: int = 1) -> dict[str, Any]:
        """The arguments of ``create``; samples asked apart get ``seed + sample`` (one seed, one answer)."""
        omit = openai.NOT_GIVEN  # not sent at all
        return {"model": self.model, "messages" if self.chat else "prompt": request.prompt,
                "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "stop": list(request.stop) or omit, "seed": omit if self.seed is None else self.seed + request.sample,
                "n": n if n > 1 else omit, "extra_body": self.extra_body or None}

    def generate(self, requests: Sequence[Request], events: Events) -> None:
        if not requests:
            return
        self._api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not self._api_key:
            log.info("no API key in $%s: sending the placeholder key EMPTY", self.api_key_env)
        try:
            asyncio.run(self._run(requests, events))
        finally:
            self._api_key = None

    async def _run(self, requests: Sequence[Request], events: Events) -> None:
        pending = iter(by_prompt(requests) if self.use_n else [[r] for r in requests])  # a prompt's samples
        first: list[str | None] = []  # the failure class (None: answered) of the first fail_fast requests

        def finish(req: Request, answer: Answer) -> None:
            """Store an outcome; stop the run when the first ``fail_fast`` requests all failed the same way."""
            events.answered(req, answer)  # stored before the run may stop on it
            if len(first) < self.fail_fast:
                first.append(None if answer.ok else reason_class(answer.error or ""))
                if len(first) == self.fail_fast and len(set(first)) == 1 and first[0] is not None:
                    raise TeacherConfigError(
                        f"{self.url}: the first {self.fail_fast} request(s) all failed the same way ({answer.error}). "
                        "Check the server, teacher.backend.model and the request settings "
                        "(teacher.backend.fail_fast=0 asks every item anyway)")

        async def worker(client: openai.AsyncOpenAI) -> None:
            for group in pending:  # one shared iterator: each group is taken by one worker
                while group:  # the samples one request asks for (n), or once each when the server ignores n
                    n = 1 if self.n_honoured is False else len(group)
                    answers = await self._ask(client, group[0], events, n)
                    if not answers[0].ok:  # failed for good: every sample asked alike
                        answers = [replace(answers[0]) for _ in range(n)]
                    elif n > 1:
                        if len(answers) < n and self.n_honoured is None:
                            log.info("%s answered %d of n=%d choices: asking once per sample from now on",
                                     self.url, len(answers), n)
                        self.n_honoured = len(answers) == n
                    for req, answer in zip(group, answers):
                        finish(req, answer)
                    group = group[len(answers):]

        # no key: the SDK needs one, and a keyless server ignores "EMPTY" (as vLLM documents)
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key or "EMPTY",
                                      max_retries=self.max_retries, timeout=self.timeout_s) as client:
            tasks = [asyncio.create_task(worker(client)) for _ in range(min(self.max_concurrency, len(requests)))]
            if self.fail_fast:
                tasks.append(asyncio.create_task(self._probe(client)))
            try:
                await asyncio.gather(*tasks)  # the first error (a TeacherConfigError) stops the run
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe(self, client: openai.AsyncOpenAI) -> None:
        """Stop the run in seconds when ``fail_fast`` attempts at once to reach the server all fail to connect."""

        async def connects() -> bool:
            try:
                await client.with_options(max_retries=0).models.list()
            except openai.APIConnectionError as e:  # nothing answered (refused, no such host, TLS), or a drop?
                return type(e.__cause__).__name__ not in ("ConnectError", "ConnectTimeout")  # httpx(2)'s names
            except openai.APIError:  # an HTTP answer, whatever its status: something listens
                pass
            return True

        if not any(await asyncio.gather(*(connects() for _ in range(self.fail_fast)))):
            raise TeacherConfigError(f"nothing answers at {self.base_url}: {self.fail_fast} attempt(s) to connect all "
                                     "failed. Is the teacher server running there (teacher.backend.base_url)?")

    async def _ask(self, client: openai.AsyncOpenAI, req: Request, events: Events, n: int = 1) -> list[Answer]:
        """One answer per choice the server returned (up to ``n``); one failed Answer when none came."""
        start, attempts = time.monotonic(), 0
        while True:
            retries = self.max_retries - attempts  # what is left of the request's retries is the SDK's
            made, sdk_reason = retries + 1, None  # a failure the SDK retries comes after all of its retries
            try:  # a copy of the client is slow to start: made only to re-ask
                sdk = client if attempts == 0 else client.with_options(max_retries=retries)
                raw = await (sdk.chat.completions if self.chat else sdk.completions).with_raw_response.create(
                    **self.params(req, n))
            except openai.APIStatusError as e:
                code, text = e.status_code, e.response.text[:300]
                text = text.replace(self._api_key, "***") if self._api_key else text  # the key never shows
                if code in (401, 403, 404):  # every item would fail alike: stop the run
                    raise TeacherConfigError(
                        f"{self.url}: HTTP {code}: {text} (check teacher.backend.base_url, teacher.backend.model "
                        "and the API key variable teacher.backend.api_key_env)") from None
                if code not in (408, 409, 429) and code < 500:  # the SDK does not retry: the item is refused
                    self.requests_sent += 1
                    return [Answer(None, f"HTTP {code}: {text}", latency_s=round(time.monotonic() - start, 4),
                                   attempts=attempts + 1)]
                reason = f"HTTP {code}"
            except openai.APITimeoutError:
                reason = f"timeout after {self.timeout_s:g}s"
            except openai.APIConnectionError as e:
                reason = f"connection error: {type(e.__cause__).__name__}: {e.__cause__}"
            else:
                made, sdk_reason = raw.retries_taken + 1, "retried by the openai SDK (reason not reported)"
                try:
                    answers = read_answers(raw.parse(), self.chat, n, round(time.monotonic() - start, 4),
                                           attempts + made)
                except (ValueError, openai.APIResponseValidationError) as e:  # bad JSON is a ValueError too
                    reason = f"malformed response: {str(e)[:200]}"
                else:
                    reason = None if all(a.text.strip() for a in answers) else "empty completion"
            self.requests_sent += made
            attempts += made
            for _ in range(made - 1):  # the SDK's retries
                events.retried(req, sdk_reason or reason)
            if reason is None:
                return answers
            if attempts > self.max_retries:
                return [Answer(None, f"{reason} (gave up after {attempts} attempts)",
                               latency_s=round(time.monotonic() - start, 4), attempts=attempts)]
            events.retried(req, reason)  # malformed or empty: asked again at once