"""A small OpenAI-compatible server on 127.0.0.1 for the teacher tests and tests/teacher_throughput.py.

``POST /v1/chat/completions`` and ``/v1/completions`` answer with ``respond(prompt)``, cut at ``stop``,
after ``latency_s``; ``faults(prompt, attempt)`` may return one of :data:`FAULTS` instead. Every request
is kept in ``received``. An aiohttp app on its own loop in a daemon thread; ``base_url`` names its port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from distill.teacher.backend import Prompt, cut_at_stop

_QUIET = logging.getLogger("loopback_server")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False

#: what ``faults`` may inject: 429 with Retry-After, 500, a hang, malformed JSON, an empty completion, a
#: dropped connection, a 400 whose message echoes the Authorization header (a client must not store it)
FAULTS = ("429", "500", "hang", "malformed", "empty", "disconnect", "400")


def prompt_key(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    authorization: str | None
    attempt: int  # how many times this prompt has been received, this one included
    fault: str | None
    time: float


class LoopbackServer:
    def __init__(
        self,
        respond: Callable[[Prompt], str],
        latency_s: float = 0.0,
        faults: Callable[[Prompt, int], str | None] | None = None,
        retry_after: str = "1",
        hang_s: float = 5.0,
        model: str = "loopback",
        honour_n: bool = True,
    ):
        self.respond = respond
        self.latency_s = latency_s
        self.faults = faults
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.model = model
        self.honour_n = honour_n  # False: answer one choice whatever ``n`` asks (as some servers do)
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self.port: int | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LoopbackServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                app = web.Application(client_max_size=64 * 1024 * 1024)
                app.router.add_post("/v1/chat/completions", self._chat)
                app.router.add_post("/v1/completions", self._completion)
                # injected faults make aiohttp log tracebacks (a dropped connection, a hang cut short at
                # shutdown); formatting a traceback in this thread can race the main thread's
                # ast.parse on CPython 3.11 ("AST constructor recursion depth mismatch"): keep it quiet
                self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, logger=_QUIET)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self.port = self._runner.addresses[0][1]
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="loopback-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- handlers
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=True)

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=False)

    async def _handle(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.in_flight += 1  # one event loop: no lock needed
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, chat)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
            prompt = body["messages"] if chat else body["prompt"]
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": {"message": f"bad request: {e}"}}, status=400)
        key = prompt_key(prompt)
        with self._lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
        fault = self.faults(prompt, attempt) if self.faults else None
        self.received.append(Received(request.path, body, request.headers.get("Authorization"), attempt, fault,
                                      time.monotonic()))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": self.retry_after})
        if fault == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if fault == "400":
            echo = request.headers.get("Authorization")
            return web.json_response({"error": {"message": f"context too long (request had {echo})"}}, status=400)
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
        if fault == "malformed":
            return web.Response(status=200, text='{"choices": [{"text": "unfinished', content_type="application/json")
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=200)
        n = int(body.get("n", 1)) if self.honour_n else 1
        texts = [cut_at_stop("" if fault == "empty" else self.respond(prompt), body.get("stop") or ())
                 for _ in range(n)]  # respond is called once per choice, in order
        prompt_text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
        usage = {"prompt_tokens": len(prompt_text.split()), "completion_tokens": sum(len(t.split()) for t in texts)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        choices = []
        for index, text in enumerate(texts):
            choice: dict[str, Any] = {"index": index, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        return web.json_response({"id": f"cmpl-{len(self.received)}", "object": "chat.completion" if chat
                                  else "text_completion", "model": body.get("model", self.model),
                                  "choices": choices, "usage": usage})

    # ----------------------------------------------------------------- for tests
    def answered(self) -> int:
        """Requests answered with a completion so far (not faulted)."""
        return sum(1 for r in self.received if r.fault is None)
