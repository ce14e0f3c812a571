"""teacher=openai against a loopback OpenAI-compatible server that injects faults."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from loopback_server import LoopbackServer  # noqa: E402
from teacher_server import FakeTeacher, read_sidecar, row_of, settings, write_svamp_like  # noqa: E402

from distill.benchmarks import get_benchmark  # noqa: E402
from distill.teacher.annotator import annotate  # noqa: E402
from distill.teacher.backend import Request, TeacherConfigError  # noqa: E402
from distill.teacher.cache import Answer  # noqa: E402
from distill.teacher.openai import OpenAIBackend  # noqa: E402

FAST = dict(timeout_s=1.0, max_retries=3)


class Recorder:
    def __init__(self):
        self.answers: dict[str, list[Answer]] = {}
        self.retries: Counter[str] = Counter()

    def answered(self, request, answer):
        self.answers.setdefault(request.key, []).append(answer)

    def retried(self, request, reason):
        self.retries[reason.split(" (")[0].split(":")[0]] += 1


# row % 8 -> what happens to the first attempts of that row's prompt
PLAN = {
    0: [],
    1: ["429"],  # Retry-After: 1
    2: ["500", "500"],
    3: ["hang"],  # past the client timeout
    4: ["malformed"],
    5: ["empty"],
    6: ["disconnect"],
    7: ["500"] * 10,  # never recovers: fails for good after max_retries
}


@pytest.mark.parametrize("chat", [False, True])
def test_faults_every_item_answered_or_failed_none_lost_or_duplicated(tmp_path, chat):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=16)
    teacher = FakeTeacher(bench, examples)
    with LoopbackServer(teacher, faults=teacher.fault_by_row(PLAN), hang_s=3.0) as server:
        backend = OpenAIBackend(server.base_url, "fake-model", chat=chat, max_concurrency=8, **FAST)
        report = annotate(settings(tmp_path), bench, backend)
        received = list(server.received)
    out = tmp_path / "out" / "svamp" / "fake"
    completions = json.loads((out / "test_CoT_0.json").read_text())
    sidecar = read_sidecar(out / "test_annotations.jsonl")
    assert len(completions) == len(sidecar) == 16
    assert [r["row"] for r in sidecar] == list(range(16))
    assert len({r["uid"] for r in sidecar}) == 16
    for rec, text in zip(sidecar, completions):
        assert rec["completion"] == text
        if rec["row"] % 8 == 7:
            assert text == "" and rec["error"].startswith("HTTP 500 (gave up after 4 attempts)")
            assert rec["parse_error"] and rec["label"] is None
            assert bench.parse_completion(text).ok is False  # the data layer counts it as a parse failure
        else:
            assert rec["error"] is None and rec["correct"] is True
            assert "made-up" not in text and text.endswith(").")  # the stop sequence cut the run-on
    assert (report.answered, report.failed, report.parse_failures) == (14, 2, 0)
    assert report.teacher_correct == 14 and report.with_gold == 16
    assert report.failure_reasons == {"HTTP 500": 2}
    # every prompt was asked exactly as often as its faults demand, never more
    per_row = Counter(row_of(teacher.index.example(r.body["messages" if chat else "prompt"]).uid) for r in received)
    for row in range(16):
        expected = {7: 4}.get(row % 8, len(PLAN[row % 8]) + 1)
        assert per_row[row] == expected, (row, per_row[row])
    assert report.retries == sum(per_row.values()) - 16
    assert report.attempts == len(received)
    # the cache holds one final record per request: nothing answered twice
    lines = [json.loads(x) for x in (tmp_path / "cache" / "svamp" / "test.fake.0-of-1.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and len({x["key"] for x in lines}) == 16


def test_retry_after_is_honoured(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=2)
    teacher = FakeTeacher(bench, examples)
    with LoopbackServer(teacher, faults=lambda p, attempt: "429" if attempt == 1 else None,
                        retry_after="1") as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, max_concurrency=2, **FAST)
        rec = Recorder()
        reqs = [Request(f"k{i}", bench.build_prompt(ex), ("\n\nQ:",)) for i, ex in enumerate(examples)]
        backend.generate(reqs, rec)
        times = {}
        for r in server.received:
            times.setdefault(r.body["prompt"], []).append(r.time)
    assert all(a[0].ok for a in rec.answers.values()) and len(rec.answers) == 2
    for first, second in times.values():
        assert second - first >= 1.0  # the client waited at least Retry-After
    assert sum(rec.retries.values()) == 2  # the SDK retried; it does not say why
    assert [a.attempts for (a,) in rec.answers.values()] == [2, 2]


def test_concurrency_is_bounded(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=60)
    for limit in (4, 20):
        with LoopbackServer(FakeTeacher(bench, examples), latency_s=0.2) as server:
            backend = OpenAIBackend(server.base_url, "m", chat=False, max_concurrency=limit, **FAST)
            rec = Recorder()
            asked = examples[:3 * limit]
            backend.generate([Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(asked)], rec)
            assert server.max_in_flight == limit
        assert len(rec.answers) == len(asked) and all(len(v) == 1 and v[0].ok for v in rec.answers.values())


def test_refused_credentials_stop_the_run_and_bad_items_fail_alone(tmp_path, monkeypatch):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=3)
    teacher = FakeTeacher(bench, examples)
    secret = "sk-test-do-not-store-4242"
    monkeypatch.setenv("FAKE_TEACHER_KEY", secret)
    # a 400 whose message echoes the key: the item fails at once, the key is scrubbed
    with LoopbackServer(teacher, faults=lambda p, a: "400") as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, api_key_env="FAKE_TEACHER_KEY", **FAST)
        rec = Recorder()
        backend.generate([Request("k", bench.build_prompt(examples[0]))], rec)
        assert server.received[0].authorization == f"Bearer {secret}"
    (answer,) = rec.answers["k"]
    assert answer.error.startswith("HTTP 400") and secret not in answer.error and "***" in answer.error
    assert answer.attempts == 1
    assert secret not in repr(backend) and secret not in json.dumps(vars(backend), default=str)

    class Unauthorized(LoopbackServer):
        async def _answer(self, request, chat):
            from aiohttp import web
            return web.json_response({"error": "bad key"}, status=401)

    with Unauthorized(teacher) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, **FAST)
        with pytest.raises(TeacherConfigError, match="HTTP 401"):
            backend.generate([Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(examples)], Recorder())


def test_only_the_named_key_variable_is_read(tmp_path, monkeypatch):
    """The SDK would read $OPENAI_API_KEY by itself: with another variable named (and unset), the request
    carries the placeholder, never that key."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=1)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    monkeypatch.delenv("MY_UNSET_KEY", raising=False)
    with LoopbackServer(FakeTeacher(bench, examples)) as server:
        rec = Recorder()
        OpenAIBackend(server.base_url, "m", chat=False, api_key_env="MY_UNSET_KEY", **FAST).generate(
            [Request("k", bench.build_prompt(examples[0]))], rec)
        assert [r.authorization for r in server.received] == ["Bearer EMPTY"]
    assert rec.answers["k"][0].ok


@pytest.mark.parametrize("fault", ["empty", "malformed"])
def test_an_answer_that_stays_empty_or_malformed_is_recorded_as_a_failure(tmp_path, fault):
    """Never an empty completion as an answer: asked again, then recorded as failed (text None)."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=1)
    with LoopbackServer(FakeTeacher(bench, examples), faults=lambda p, a: fault) as server:
        rec = Recorder()
        OpenAIBackend(server.base_url, "m", chat=False, timeout_s=1.0, max_retries=2).generate(
            [Request("k", bench.build_prompt(examples[0]))], rec)
        assert len(server.received) == 3
    (answer,) = rec.answers["k"]
    reason = "empty completion" if fault == "empty" else "malformed response"
    assert answer.text is None and answer.error.startswith(reason) and "gave up after 3 attempts" in answer.error
    assert rec.retries == {reason: 2}


def closed_port_url() -> str:
    """A loopback URL where nothing listens any more."""
    server = LoopbackServer(lambda prompt: "").start()
    url = server.base_url
    server.stop()
    return url


def test_a_teacher_that_is_not_there_stops_the_run_at_once(tmp_path):
    """Nothing listens: the first attempts all fail to connect, and the run stops in well under a
    second, naming the URL, instead of retrying every item with backoff (47 s for 4 items)."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=20)
    url = closed_port_url()
    rec = Recorder()
    started = time.monotonic()
    with pytest.raises(TeacherConfigError) as err:
        OpenAIBackend(url, "m", chat=False, max_retries=6).generate(
            [Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(examples)], rec)
    assert time.monotonic() - started < 5.0
    assert f"nothing answers at {url}: 8 attempt(s) to connect all failed" in str(err.value)
    assert rec.answers == {} and sum(rec.retries.values()) < 8  # nothing recorded; no retry waited for


def test_first_requests_failing_the_same_way_stop_the_run(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=40)
    for fault in ("500", "400"):
        with LoopbackServer(FakeTeacher(bench, examples), faults=lambda p, a: fault) as server:
            rec = Recorder()
            with pytest.raises(TeacherConfigError, match=rf"the first 8 request\(s\) all failed the same way \(HTTP {fault}"):
                OpenAIBackend(server.base_url, "m", chat=False, max_concurrency=4, **FAST).generate(
                    [Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(examples)], rec)
            assert 8 <= len(rec.answers) < 40 and len({r.body["prompt"] for r in server.received}) < 40
    # teacher.backend.fail_fast=0: every item is asked whatever happens
    with LoopbackServer(FakeTeacher(bench, examples), faults=lambda p, a: "400") as server:
        rec = Recorder()
        OpenAIBackend(server.base_url, "m", chat=False, fail_fast=0, **FAST).generate(
            [Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(examples)], rec)
    assert len(rec.answers) == 40 and not any(a[0].ok for a in rec.answers.values())


def test_connection_errors_after_an_answer_are_retried_then_recorded(tmp_path):
    """Once the teacher has answered, a lost connection belongs to its item: retried, then recorded."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=3)
    teacher = FakeTeacher(bench, examples)
    with LoopbackServer(teacher, faults=lambda p, a: None if teacher.index.example(p).uid.endswith("/0")
                        else "disconnect") as server:
        rec = Recorder()
        OpenAIBackend(server.base_url, "m", chat=False, max_concurrency=1, **FAST).generate(
            [Request(f"k{i}", bench.build_prompt(ex)) for i, ex in enumerate(examples)], rec)
    assert rec.answers["k0"][0].ok
    for key in ("k1", "k2"):
        (answer,) = rec.answers[key]
        assert answer.error.startswith("connection error") and answer.attempts == 4
    assert rec.retries == {"connection error": 6}


def test_server_errors_are_retried_after_a_backoff_not_at_once(tmp_path):
    """The SDK's backoff (0.5 s, doubling, with jitter down to 75%) spaces the retries of a 500."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=1)
    with LoopbackServer(FakeTeacher(bench, examples), faults=lambda p, a: "500" if a <= 2 else None) as server:
        rec = Recorder()
        OpenAIBackend(server.base_url, "m", chat=False, **FAST).generate([Request("k", bench.build_prompt(examples[0]))], rec)
        times = [r.time for r in server.received]
    (answer,) = rec.answers["k"]
    assert answer.ok and answer.attempts == 3 and len(times) == 3
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.6
