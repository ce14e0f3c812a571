"""annotate.py end to end: resuming, sharding and merging, self-consistency, the gold filter,
a kill mid-run, keeping the API key out of every file, and strict exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from loopback_server import LoopbackServer  # noqa: E402
from teacher_server import REPO, FakeTeacher, read_sidecar, run_annotate, settings, write_svamp_like  # noqa: E402

from distill.benchmarks import get_benchmark  # noqa: E402
from distill.data.files import load_file  # noqa: E402
from distill.teacher.annotator import IncompleteShardsError, annotate, shard_range  # noqa: E402
from distill.teacher.openai import OpenAIBackend  # noqa: E402

FAST = dict(timeout_s=2.0, max_retries=2)


def official(tmp: Path, teacher: str = "fake") -> list[str]:
    out = tmp / "out" / "svamp" / teacher
    shards = sorted(out.glob("test_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [c for p in shards for c in json.loads(p.read_text())]


def test_rerun_asks_only_for_what_is_missing_and_retries_failures(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=10)
    teacher = FakeTeacher(bench, examples)
    # row 3 fails for good on the first run (500 on every attempt), then recovers
    with LoopbackServer(teacher, faults=lambda p, a: "500" if teacher.index.example(p).uid.endswith("/3")
                        and a <= 3 else None) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, **FAST)
        first = annotate(settings(tmp_path, limit=6), bench, backend)
        assert (first.asked, first.failed, first.answered) == (6, 1, 5)
        assert official(tmp_path)[3] == ""
        n = len(server.received)
        second = annotate(settings(tmp_path), bench, backend)  # all 10 rows now
        assert (second.from_cache, second.asked, second.failed) == (5, 5, 0)  # 4 new rows + the failed one
        assert len(server.received) == n + 5
        third = annotate(settings(tmp_path, retry_failed=False), bench, backend)
        assert (third.from_cache, third.asked) == (10, 0) and len(server.received) == n + 5
    assert all(official(tmp_path)) and len(official(tmp_path)) == 10


def test_shards_then_merge_equal_one_run_and_merge_names_missing_shards(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=11)
    with LoopbackServer(FakeTeacher(bench, examples)) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, **FAST)
        whole = annotate(settings(tmp_path / "whole", data_dir=tmp_path / "data", shard_size=4), bench, backend)
        sharded = dict(data_dir=tmp_path / "data", num_shards=3, shard_size=4)
        for shard in (0, 2):
            r = annotate(settings(tmp_path / "sh", shard=shard, **sharded), bench, backend)
            assert r.rows == shard_range(0, 11, shard, 3) and not list((tmp_path / "sh" / "out").rglob("*_CoT_*"))
        with pytest.raises(IncompleteShardsError, match=r"teacher\.shard=1 \(rows \[3, 7\)\): 4 of 4 rows") as err:
            annotate(settings(tmp_path / "sh", merge=True, **sharded), bench, backend)
        assert "shard=0" not in str(err.value) and "shard=2" not in str(err.value)
        asked = len(server.received)
        annotate(settings(tmp_path / "sh", shard=1, **sharded), bench, backend)
        merged = annotate(settings(tmp_path / "sh", merge=True, **sharded), bench, backend)
        assert len(server.received) == asked + 4  # the merge asked nothing
    assert merged.asked == 0 and merged.items == whole.items == 11
    for name in ("test_CoT_0.json", "test_CoT_1.json", "test_CoT_2.json"):
        assert (tmp_path / "sh/out/svamp/fake" / name).read_bytes() == (tmp_path / "whole/out/svamp/fake" / name).read_bytes()
    assert not (tmp_path / "whole/out/svamp/fake/test_CoT_3.json").exists()
    # a smaller shard_size later: stale higher shards are removed, so readers see the right rows
    annotate(settings(tmp_path / "whole", data_dir=tmp_path / "data", shard_size=20), bench, backend)
    assert sorted(p.name for p in (tmp_path / "whole/out/svamp/fake").glob("*_CoT_*")) == ["test_CoT_0.json"]


def test_self_consistency_votes_and_keeps_an_agreeing_rationale(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=3)

    def label(row, ex, call):  # the answer to sample (call - 1) of each row
        wrong = "(1 + 1)"
        return {0: [wrong, ex.gold, "( 3.0 + 10.0 )"],  # gold twice (by value): gold wins
                1: [wrong, None, "(2)"],  # unparsable sample does not vote; (1+1) == (2)
                2: ["(7)", "(8)", "(9)"]}[row][call - 1]  # three-way tie: the first

    teacher = FakeTeacher(bench, examples, label=label)
    with LoopbackServer(teacher) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, temperature=0.7, max_concurrency=1, **FAST)
        report = annotate(settings(tmp_path, num_samples=3, out_dir=tmp_path / "data"), bench, backend)
    side = read_sidecar(tmp_path / "data/svamp/fake/test_annotations.jsonl")
    assert [r["sample"] for r in side] == [1, 0, 0]
    assert side[0]["label"] == "( 3.0 + 10.0 )" and side[0]["correct"] and side[0]["votes"][1][1] == 2
    assert side[1]["votes"] == [["(1 + 1)", 2]] and side[1]["samples"][1]["label"] is None
    assert side[2]["label"] == "(7)"
    assert report.requests == 9 and report.teacher_correct == 1
    assert side[0]["rationale"].startswith("Thinking about row 0")  # the rationale of the voted sample
    # per-sample and vote accuracy, agreement (row 0: 2 of 3 vote with the majority, row 1: 2, row 2: 1)
    assert report.sample_accuracy == [0.0, 1 / 3, 1 / 3] and report.to_dict()["vote_accuracy"] == 1 / 3
    assert report.agreement == pytest.approx(5 / 9) and report.unanimous == 0
    assert "vote accuracy       33.33%" in report.format()
    # every sample is its own shard set in the release layout: the single-sample reader reads it
    for s in range(3):
        read, _ = load_file(bench, tmp_path / "data", "test", teacher=f"fake/samples/{s}")
        assert [e.teacher_label for e in read] == [label(r, examples[r], s + 1) for r in range(3)]


def test_more_samples_later_asks_only_for_the_new_ones_and_n_falls_back(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=4)
    with LoopbackServer(FakeTeacher(bench, examples), honour_n=False) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, temperature=0.7, max_concurrency=1, seed=7, **FAST)
        two = annotate(settings(tmp_path, num_samples=2), bench, backend)
        # the server ignores n: the first request asked n=2 and got one choice, then one request per sample
        assert two.asked == 8 and len(server.received) == 8 and backend.n_honoured is False
        assert [r.body.get("n") for r in server.received[:3]] == [2, None, None]
        assert [r.body["seed"] for r in server.received[:3]] == [7, 8, 7]  # seed + sample, apart
        four = annotate(settings(tmp_path, num_samples=4), bench, backend)
        assert (four.from_cache, four.asked) == (8, 8) and len(server.received) == 16
        assert sorted(p.name for p in (tmp_path / "out/svamp/fake/samples").iterdir()) == ["0", "1", "2", "3"]
        annotate(settings(tmp_path, num_samples=1), bench, backend)  # k = 1 again: no stale samples are left
        assert not list((tmp_path / "out/svamp/fake/samples").rglob("test_CoT_*.json"))
    with LoopbackServer(FakeTeacher(bench, examples)) as server:  # a server that honours n: one request per row
        backend = OpenAIBackend(server.base_url, "m", chat=False, temperature=0.7, **FAST)
        report = annotate(settings(tmp_path / "n", num_samples=3, data_dir=tmp_path / "data"), bench, backend)
        assert report.asked == 12 and len(server.received) == 4 and {r.body["n"] for r in server.received} == {3}
        assert backend.n_honoured is True and report.answered == 4


def test_filter_gold_drops_rationales_of_wrong_labels_only(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=4)
    teacher = FakeTeacher(bench, examples, label=lambda row, ex, call: "(0 + 1)" if row % 2 else ex.gold)
    with LoopbackServer(teacher) as server:
        backend = OpenAIBackend(server.base_url, "m", chat=False, **FAST)
        report = annotate(settings(tmp_path, filter_gold=True, out_dir=tmp_path / "data"), bench, backend)
    assert report.filtered == 2 and report.teacher_correct == 2
    side = read_sidecar(tmp_path / "data/svamp/fake/test_annotations.jsonl")
    assert [r.get("filtered", False) for r in side] == [False, True, False, True]
    assert side[1]["completion"] == "The answer is (0 + 1)." and "Thinking about row 1" in side[1]["unfiltered"]
    read, stats = load_file(bench, tmp_path / "data", "test", teacher="fake")
    assert [e.rationale is not None for e in read] == [True, False, True, False]
    assert [e.teacher_label for e in read] == [examples[0].gold, "(0 + 1)", examples[2].gold, "(0 + 1)"]
    assert stats.parse_failures == 0


def _kill_after(proc: subprocess.Popen, cache_file: Path, answers: int, deadline_s: float = 60) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cache_file.exists() and cache_file.read_bytes().count(b"\n") >= answers:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return cache_file.read_bytes().count(b"\n")
        if proc.poll() is not None:
            raise AssertionError(f"annotate.py ended before the kill: {proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("no answers arrived")


def test_killed_mid_run_then_rerun_gives_the_same_files(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=40)
    # a few failures on the way, so retried requests are part of what a kill interrupts
    teacher = FakeTeacher(bench, examples)
    with LoopbackServer(teacher, latency_s=0.03, faults=teacher.fault_by_row({0: [], 1: [], 2: [], 3: ["500"]})) as srv:
        def args(run):
            return ["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / run}",
                    f"teacher.cache_dir={tmp_path / run / 'cache'}", f"hydra.run.dir={tmp_path / run / 'hydra'}",
                    f"teacher.backend.base_url={srv.base_url}", "teacher.backend.model=m", "teacher.name=fake",
                    "teacher.backend.chat=false", "teacher.backend.max_concurrency=2",
                    "shard_size=16", "progress=false"]

        full = run_annotate(args("full"))
        assert full.returncode == 0, full.stderr
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, str(REPO / "annotate.py"), *args("killed")], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cache_file = tmp_path / "killed/cache/svamp/test.fake.0-of-1.jsonl"
        done = _kill_after(proc, cache_file, answers=10)
        assert proc.returncode == -signal.SIGKILL and 10 <= done < 40
        assert not (tmp_path / "killed/svamp/fake/test_CoT_0.json").exists()
        with open(cache_file, "ab") as fh:  # as if the kill had torn a line
            fh.write(b'{"key": "0123", "text": "torn')
        rerun = run_annotate(args("killed"))
        assert rerun.returncode == 0, rerun.stderr
    report = json.loads((tmp_path / "killed/svamp/fake/test_report.json").read_text())
    assert report["from_cache"] == done and report["asked"] == 40 - done
    for name in ("test_CoT_0.json", "test_CoT_1.json", "test_CoT_2.json"):
        assert (tmp_path / "killed/svamp/fake" / name).read_bytes() == (tmp_path / "full/svamp/fake" / name).read_bytes()
    volatile = {"latency_s", "attempts"}
    strip = [{k: v for k, v in r.items() if k not in volatile} for r in
             read_sidecar(tmp_path / "killed/svamp/fake/test_annotations.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k not in volatile} for r in
                     read_sidecar(tmp_path / "full/svamp/fake/test_annotations.jsonl")]


def test_killed_with_k_samples_the_rerun_asks_only_for_the_missing_samples(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=12)
    with LoopbackServer(FakeTeacher(bench, examples), latency_s=0.03) as srv:
        args = ["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path}",
                f"teacher.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                f"teacher.backend.base_url={srv.base_url}", "teacher.backend.model=m", "teacher.name=fake",
                "teacher.backend.chat=false", "teacher.samples=3", "teacher.backend.temperature=0.7",
                "teacher.backend.use_n=false", "teacher.backend.max_concurrency=2", "progress=false"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, str(REPO / "annotate.py"), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cache_file = tmp_path / "cache/svamp/test.fake.0-of-1.jsonl"
        done = _kill_after(proc, cache_file, answers=7)
        assert proc.returncode == -signal.SIGKILL and 7 <= done < 36
        asked_before = len(srv.received)
        rerun = run_annotate(args)
        assert rerun.returncode == 0, rerun.stderr
        assert len(srv.received) - asked_before == 36 - done  # the missing samples, no sample twice
    report = json.loads((tmp_path / "svamp/fake/test_report.json").read_text())
    assert (report["from_cache"], report["asked"], report["samples_per_item"]) == (done, 36 - done, 3)
    keys = [json.loads(line)["key"] for line in cache_file.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 36
    for s in range(3):
        assert len(json.loads((tmp_path / f"svamp/fake/samples/{s}/test_CoT_0.json").read_text())) == 12


def test_api_key_is_used_but_never_stored_or_logged(tmp_path):
    secret = "sk-fake-SECRET-0123456789abcdef"
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=4)
    teacher = FakeTeacher(bench, examples)
    # one item gets a 400 that echoes the Authorization header back
    with LoopbackServer(teacher, faults=teacher.fault_by_row({0: ["400"], 1: [], 2: [], 3: []})) as srv:
        result = run_annotate(["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}",
                               f"out_dir={tmp_path / 'out'}", f"teacher.cache_dir={tmp_path / 'cache'}",
                               f"hydra.run.dir={tmp_path / 'hydra'}", f"teacher.backend.base_url={srv.base_url}",
                               "teacher.backend.model=m", "teacher.name=fake",
                               "teacher.backend.api_key_env=MY_TEACHER_KEY", "hydra.verbose=true"], env={"MY_TEACHER_KEY": secret})
        auth = {r.authorization for r in srv.received}
    assert result.returncode == 1 and "1 of 4 item(s) failed" in result.stderr, result.stderr  # the 400
    assert auth == {f"Bearer {secret}"}  # the key was sent
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stdout and secret not in result.stderr
    side = read_sidecar(tmp_path / "out/svamp/fake/test_annotations.jsonl")
    assert side[0]["error"].startswith("HTTP 400") and "Bearer ***" in side[0]["error"]


def test_strict_exits_non_zero_only_when_asked(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=3)
    teacher = FakeTeacher(bench, examples, label=lambda row, ex, call: None if row == 1 else ex.gold)
    with LoopbackServer(teacher) as srv:
        common = ["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}",
                  f"teacher.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                  f"teacher.backend.base_url={srv.base_url}", "teacher.backend.model=m", "teacher.name=fake"]
        lenient = run_annotate(common)
        strict = run_annotate([*common, "strict=true"])
    assert lenient.returncode == 0, lenient.stderr
    assert "parse failures      1" in lenient.stdout + lenient.stderr
    assert strict.returncode == 1 and "strict=true: 0 failed, 1 unparsed" in strict.stderr


def test_a_jsonl_task_is_prompted_from_its_prompt_file(tmp_path):
    from distill.benchmarks import JsonlBenchmark

    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("- {input: 'Is ice cold?', rationale: Ice is frozen water., label: 'yes'}\n"
                      "- {input: 'Is fire cold?', rationale: Fire burns and is hot., label: 'no'}\n")
    data = tmp_path / "data" / "yesno"
    data.mkdir(parents=True)
    rows = [{"question": f"Is {x} wet?", "answer": a} for x, a in [("rain", "yes"), ("sand", "no"), ("sea", "yes")]]
    (data / "yesno_test.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = dict(name="yesno", label_field="answer", input_fields=["question"], label_space=["yes", "no"])
    bench = JsonlBenchmark(**spec, prompt_file=str(prompt))
    examples = load_file(bench, tmp_path / "data", "test", teacher=None)[0]
    with LoopbackServer(FakeTeacher(bench, examples)) as srv:
        result = run_annotate([
            "data=jsonl", "data.benchmark.name=yesno", "data.benchmark.input_fields=[question]",
            "data.benchmark.label_field=answer", "data.benchmark.label_space=[yes,no]",
            f"data.benchmark.prompt_file={prompt}", "split=test", f"paths.data_dir={tmp_path / 'data'}",
            f"teacher.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}",
            f"teacher.backend.base_url={srv.base_url}", "teacher.backend.model=m", "teacher.name=fake", "strict=true"])
        sent = srv.received[0].body["messages"]
    assert result.returncode == 0, result.stderr
    assert sent[1]["content"] == "Q: Is ice cold?" and sent[2]["content"] == "Ice is frozen water. So the answer is yes."
    read, stats = load_file(bench, tmp_path / "data", "test", teacher="fake")
    assert [e.teacher_label for e in read] == ["yes", "no", "yes"] and stats.teacher_correct == 3


def _common(tmp_path: Path, url: str, out: str = "out") -> list[str]:
    return ["data=svamp", "split=test", f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / out}",
            f"teacher.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'hydra'}",
            f"teacher.backend.base_url={url}", "teacher.backend.model=m", "teacher.name=fake", "progress=false"]


def test_a_failed_item_exits_non_zero_and_the_report_names_its_placeholder(tmp_path):
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=3)
    teacher = FakeTeacher(bench, examples)
    with LoopbackServer(teacher, faults=teacher.fault_by_row({0: [], 1: ["400"] * 9, 2: []})) as srv:
        result = run_annotate(_common(tmp_path, srv.base_url))
    assert result.returncode == 1
    assert "1 of 3 item(s) failed ({'HTTP 400': 1})" in result.stderr and "rows 1 " in result.stderr
    out = tmp_path / "out" / "svamp" / "fake"
    assert json.loads((out / "test_CoT_0.json").read_text())[1] == ""  # the placeholder keeps rows aligned
    assert [r["placeholder"] for r in read_sidecar(out / "test_annotations.jsonl")] == [False, True, False]
    report = json.loads((out / "test_report.json").read_text())
    assert report["placeholder_rows"] == [1] and report["failed"] == 1


def test_a_teacher_that_is_not_there_stops_early_and_keeps_the_cache(tmp_path):
    """teacher.backend.base_url where nothing listens: a non-zero exit within seconds that names the URL,
    nothing written, the answers of an earlier run kept; with the teacher back, a rerun asks only
    for what is missing."""
    bench = get_benchmark("svamp")
    examples = write_svamp_like(tmp_path / "data", n=24)
    with LoopbackServer(FakeTeacher(bench, examples)) as srv:
        first = run_annotate([*_common(tmp_path, srv.base_url), "limit=4"])
        url = srv.base_url
    assert first.returncode == 0, first.stderr
    shard = tmp_path / "out" / "svamp" / "fake" / "test_CoT_0.json"
    written = shard.read_bytes()
    started = time.monotonic()
    gone = run_annotate([*_common(tmp_path, url), "teacher.backend.max_retries=2"])
    assert gone.returncode == 1 and time.monotonic() - started < 30
    assert f"teacher run stopped: nothing answers at {url}: 8 attempt(s) to connect all failed" in gone.stderr
    assert "Stopped after 0 of 20 request(s); nothing was written" in gone.stderr
    assert shard.read_bytes() == written  # nothing written
    with LoopbackServer(FakeTeacher(bench, examples)) as srv:
        rerun = run_annotate(_common(tmp_path, srv.base_url))
        asked = len(srv.received)
    assert rerun.returncode == 0, rerun.stderr
    assert asked == 20  # the 4 cached answers were kept
    report = json.loads((tmp_path / "out" / "svamp" / "fake" / "test_report.json").read_text())
    assert (report["from_cache"], report["asked"], report["failed"]) == (4, 20, 0)
