"""``teacher=openai``: any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, hosted APIs).

Requests go to ``{base_url}/chat/completions`` (``chat: true``) or ``{base_url}/completions``
(``chat: false``) through one async httpx client. ``max_concurrency`` workers each hold one
request at a time, so at most that many are in flight (a long Retry-After pause holds its slot:
back-pressure is what a rate-limited server asks for).

Retried, with exponential backoff and jitter: HTTP 408/429/5xx, timeouts, connection errors,
malformed JSON, and empty completions. A ``Retry-After`` header (seconds or an HTTP date) is
honoured: that request waits at least that long, and every worker holds off new requests until
then. Other 4xx answers (e.g. a prompt longer than the context) fail the item at once; 401, 403
and 404 stop the run, since they would fail every item. So does a teacher that is not there
(:class:`~distill.teacher.backend.FailFast`, ``fail_fast`` requests): the first attempts all
failing to connect, or the first requests all failing for good for the same reason.

Several samples of one prompt (``teacher.samples``) go out as one request with the OpenAI ``n``
parameter (``use_n``); a server that answers with fewer choices than asked (one that ignores ``n``)
is from then on asked once per sample, each with its own ``seed + sample`` when a seed is set. Every
sample is still answered (and cached) on its own.

The API key is read from the environment variable named by ``api_key_env`` when the run starts,
so neither Hydra's saved config nor any log holds it; it is also scrubbed from recorded errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx

from distill.teacher.backend import Backend, Events, FailFast, Request, TeacherConfigError
from distill.teacher.cache import Answer

log = logging.getLogger(__name__)
# httpx logs one INFO line per request: far too many for a teacher run
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RETRY_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
FATAL_STATUS = frozenset({401, 403, 404})
#: connections per httpx client (see OpenAIBackend._run)
POOL_SIZE = 8


class MalformedResponse(ValueError):
    pass


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def read_completion(payload: Any, chat: bool) -> tuple[str, dict[str, Any], str | None]:
    """(text, usage, finish_reason) from a response body; MalformedResponse if it is not one."""
    choices, usage = read_choices(payload, chat)
    return choices[0][0], usage, choices[0][1]


def read_choices(payload: Any, chat: bool) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    """([(text, finish_reason) per choice, in index order], usage) from a response body;
    MalformedResponse if it is not one."""
    field = "message.content" if chat else "text"
    try:
        raw = sorted(payload["choices"], key=lambda c: c.get("index", 0))
        raw[0]  # noqa: B018 - at least one choice
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponse(f"no choices[0].{field} ({e!r})") from None
    choices = []
    for choice in raw:
        try:
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise MalformedResponse(f"no choices[{len(choices)}].{field} ({e!r})") from None
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise MalformedResponse(f"completion is a {type(text).__name__}, not text")
        choices.append((text, choice.get("finish_reason")))
    usage = payload.get("usage") if isinstance(payload, Mapping) else None
    return choices, usage if isinstance(usage, Mapping) else {}


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        chat: bool = True,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 600.0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        fail_fast: int = 8,
        use_n: bool = True,
    ):
        if not base_url or not model:
            raise TeacherConfigError("teacher=openai needs teacher.backend.base_url and teacher.backend.model")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or fail_fast < 0:
            raise TeacherConfigError("teacher: max_concurrency >= 1, max_retries >= 0, timeout_s > 0, fail_fast >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.chat = bool(chat)
        self.api_key_env = api_key_env
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.stop = None if stop is None else list(stop)
        self.extra_body = dict(extra_body or {})
        self.fail_fast = int(fail_fast)
        self.use_n = bool(use_n)
        self.n_honoured: bool | None = None  # learnt from the first request with n > 1
        self._watch = FailFast(self.url, 0, 0)
        self._api_key: str | None = None
        self._not_before = 0.0  # monotonic time before which no request starts (server-wide Retry-After)
        self.requests_sent = 0

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, chat={self.chat})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.chat else 'completions'}"

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, **{f"extra.{k}": v for k, v in sorted(self.extra_body.items())}}

    def body(self, request: Request, n: int = 1) -> dict[str, Any]:
        """The request body; ``n`` > 1 asks for that many choices (samples ``request.sample`` on)."""
        body: dict[str, Any] = {"model": self.model, "temperature": self.temperature, "top_p": self.top_p,
                                "max_tokens": self.max_tokens}
        body["messages" if self.chat else "prompt"] = request.prompt
        if request.stop:
            body["stop"] = list(request.stop)
        if self.seed is not None:  # samples asked apart must not share a seed (same seed, same answer)
            body["seed"] = self.seed + request.sample
        if n > 1:
            body["n"] = n
        body.update(self.extra_body)
        return body

    def groups(self, requests: Sequence[Request]) -> list[list[Request]]:
        """The requests as they go out: the samples of one prompt together (with ``use_n``), else one each."""
        if not self.use_n:
            return [[r] for r in requests]
        by_prompt: dict[str, list[Request]] = {}
        for r in requests:
            key = repr((r.prompt, r.stop))
            by_prompt.setdefault(key, []).append(r)
        return [sorted(g, key=lambda r: r.sample) for g in by_prompt.values()]

    # ----------------------------------------------------------------- running
    def generate(self, requests: Sequence[Request], events: Events) -> None:
        if not requests:
            return
        self._api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not self._api_key:
            log.info("no API key in $%s: sending requests without one", self.api_key_env)
        try:
            asyncio.run(self._run(requests, events))
        finally:
            self._api_key = None

    async def _run(self, requests: Sequence[Request], events: Events) -> None:
        n = min(self.max_concurrency, len(requests))
        self._watch = FailFast(self.url, self.fail_fast, len(requests))
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        pending = iter(self.groups(requests))
        # several small connection pools instead of one big one: httpcore's pool bookkeeping costs
        # O(connections^2) per request, which caps one pool of 64 connections below 100 req/s
        # (encode/httpx#3215); pools of <= POOL_SIZE keep the client near concurrency / latency
        sizes = [len(range(i, n, -(-n // POOL_SIZE))) for i in range(-(-n // POOL_SIZE))]
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(httpx.AsyncClient(
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                headers=headers, timeout=self.timeout_s)) for size in sizes]

            async def worker(client: httpx.AsyncClient) -> None:
                for group in pending:  # one shared iterator: each group is taken by one worker
                    rest = group
                    if len(group) > 1 and self.n_honoured is not False:
                        answers = await self._ask(client, group[0], events, n=len(group))
                        if answers[0].ok:
                            if len(answers) < len(group) and self.n_honoured is None:
                                log.info("%s answered %d of n=%d choices: asking once per sample from now on",
                                         self.url, len(answers), len(group))
                            self.n_honoured = len(answers) >= len(group)
                        else:  # failed for good: every sample of the group alike
                            answers = [replace(answers[0]) for _ in group]
                        for req, answer in zip(group, answers):
                            events.answered(req, answer)
                            self._watch.finished(answer)
                        rest = group[len(answers):]
                    for req in rest:
                        (answer,) = await self._ask(client, req, events)
                        events.answered(req, answer)  # stored before the run may stop on it
                        self._watch.finished(answer)

            tasks = [asyncio.create_task(worker(clients[i % len(clients)])) for i in range(n)]
            done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            if errors:  # a TeacherConfigError: every worker may have hit it; report the first
                raise errors[0]

    @staticmethod
    def _answers(choices: list[tuple[str, str | None]], usage: Mapping[str, Any], latency: float,
                 attempt: int) -> list[Answer]:
        """One Answer per choice; the usage of a request with several choices is shared out evenly."""
        k = len(choices)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        share = None if completion is None else [completion // k + (i < completion % k) for i in range(k)]
        return [Answer(text, None, prompt if i == 0 else (None if prompt is None else 0),
                       None if share is None else share[i], latency, attempt, finish)
                for i, (text, finish) in enumerate(choices)]

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [cap/2, cap], cap = base * 2^(attempt-1)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return cap * random.uniform(0.5, 1.0)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _ask(self, client: httpx.AsyncClient, req: Request, events: Events, n: int = 1) -> list[Answer]:
        """One answer per choice the server returned (up to ``n``); one failed Answer when none came."""
        start = time.monotonic()
        body = self.body(req, n)
        attempt = 0
        while True:
            attempt += 1
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            retry_after = None
            self.requests_sent += 1
            try:
                resp = await client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                reason = f"timeout after {self.timeout_s:g}s ({type(e).__name__})"
                if isinstance(e, httpx.ConnectTimeout):
                    self._watch.connect_failed(reason)
                else:
                    self._watch.connected()
            except httpx.TransportError as e:
                reason = f"connection error: {type(e).__name__}: {e}"
                if isinstance(e, httpx.ConnectError):
                    self._watch.connect_failed(reason)
                else:
                    self._watch.connected()
            else:
                self._watch.connected()
                code = resp.status_code
                if code == 200:
                    try:
                        choices, usage = read_choices(resp.json(), self.chat)
                    except (ValueError, MalformedResponse) as e:  # json.JSONDecodeError is a ValueError
                        reason = f"malformed response: {str(e)[:200]}"
                    else:
                        if all(text.strip() for text, _ in choices):
                            return self._answers(choices[:n], usage, round(time.monotonic() - start, 4), attempt)
                        reason = "empty completion"
                elif code in FATAL_STATUS:
                    raise TeacherConfigError(
                        f"{self.url}: HTTP {code}: {self._scrub(resp.text[:300])} "
                        "(check teacher.backend.base_url, teacher.backend.model and the API key variable "
                        "teacher.backend.api_key_env)")
                elif code in RETRY_STATUS or code >= 500:
                    reason = f"HTTP {code}"
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                else:  # the server refuses this item (e.g. prompt too long): asking again will not help
                    return [Answer(None, f"HTTP {code}: {self._scrub(resp.text[:300])}", latency_s=round(
                        time.monotonic() - start, 4), attempts=attempt)]
            if attempt > self.max_retries:
                return [Answer(None, f"{reason} (gave up after {attempt} attempts)",
                               latency_s=round(time.monotonic() - start, 4), attempts=attempt)]
            events.retried(req, reason)
            if retry_after is not None:
                delay = min(retry_after, self.max_retry_after_s) * random.uniform(1.0, 1.1)
                self._not_before = max(self._not_before, time.monotonic() + delay)
            else:
                delay = self.backoff(attempt)
            await asyncio.sleep(delay)
