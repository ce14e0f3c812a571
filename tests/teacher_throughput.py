"""Throughput of teacher=openai against the loopback server at a fixed latency (not a test: the
figures are the machine's). The server runs in its own process; for each concurrency c it prints the
client's requests/s, with and without the durable answer cache, beside the ideal c / latency.

    python tests/teacher_throughput.py [--latency-ms 50] [--concurrency 1 8 64] [--seconds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from distill.teacher.backend import Request
from distill.teacher.cache import Answer, AnswerCache, request_key
from distill.teacher.openai import OpenAIBackend

ANSWER = "There are 3 boxes with 4 apples each, so 3 * 4 = 12 apples. The answer is (3 * 4)."


def _serve(latency_s: float, conn) -> None:
    from loopback_server import LoopbackServer  # tests/ is on the path: this file's folder

    server = LoopbackServer(lambda prompt: ANSWER, latency_s=latency_s).start()
    conn.send(server.base_url)
    conn.recv()  # until told to stop
    server.stop()


class _Count:
    def __init__(self, cache: AnswerCache | None):
        self.cache, self.ok, self.failed = cache, 0, 0

    def answered(self, request: Request, answer: Answer) -> None:
        if self.cache is not None:
            self.cache.put(request.key, answer)
        self.ok += answer.ok
        self.failed += not answer.ok

    def retried(self, request: Request, reason: str) -> None:
        pass


def measure(base_url: str, concurrency: int, n: int, cache_dir: Path | None) -> tuple[float, int]:
    backend = OpenAIBackend(base_url, "bench", chat=False, max_concurrency=concurrency, timeout_s=30, max_retries=0,
                            api_key_env=None)
    tag = f"c{concurrency}-{time.monotonic_ns()}"
    requests = [Request(request_key({"bench": tag, "i": i}), f"Q: question {i}?\nA:") for i in range(n)]
    cache = AnswerCache(cache_dir, tag).open() if cache_dir is not None else None
    events = _Count(cache)
    start = time.perf_counter()
    try:
        backend.generate(requests, events)
    finally:
        if cache is not None:
            cache.close()
    elapsed = time.perf_counter() - start
    return n / elapsed, events.failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=2.0, help="ideal duration of each measurement")
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(latency, child), daemon=True)
    proc.start()
    base_url = parent.recv()
    print(f"loopback server {base_url}, latency {args.latency_ms:g} ms per request")
    print(f"{'concurrency':>11} {'requests':>8} {'ideal req/s':>11} {'client req/s':>12} {'+cache req/s':>12} "
          f"{'% of ideal':>10}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for c in args.concurrency:
                ideal = c / latency
                n = max(c, int(ideal * args.seconds))
                measure(base_url, c, min(n, 2 * c), None)  # warm up connections
                rate, failed = measure(base_url, c, n, None)
                rate_cached, failed_cached = measure(base_url, c, n, Path(tmp))
                note = f"  ({failed + failed_cached} failed)" if failed or failed_cached else ""
                print(f"{c:>11} {n:>8} {ideal:>11.1f} {rate:>12.1f} {rate_cached:>12.1f} {rate / ideal:>10.0%}{note}")
    finally:
        parent.send("stop")
        proc.join(10)


if __name__ == "__main__":
    main()
