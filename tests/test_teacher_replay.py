"""Replay: a loopback teacher that answers each prompt with the release's PaLM completion for
that input makes annotate.py write the release's files again, the DataModule gives the same
batches from the replayed files as from the release's, and the README's teacher recipe runs
end to end on data without the release's shards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from loopback_server import LoopbackServer  # noqa: E402
from teacher_server import PromptIndex, run_annotate  # noqa: E402
from train_utils import QUICK, REPO, subprocess_env  # noqa: E402

from distill.benchmarks import get_benchmark  # noqa: E402
from distill.benchmarks.io import read_teacher_completions, records_path  # noqa: E402
from distill.data.__main__ import main as summary_main  # noqa: E402
from distill.data.files import load_file  # noqa: E402

ROWS = 30


def replay(shared: Path, tmp: Path, name: str, split: str, chat: bool) -> tuple[list[str], list[str], list]:
    """Run annotate.py on the first ROWS rows against a server replaying the release; returns
    (release completions, replayed completions, requests received)."""
    bench = get_benchmark(name)
    examples = load_file(bench, shared, split, teacher=None)[0][:ROWS]
    release = read_teacher_completions(shared, name, "llm", split)[0][:ROWS]
    by_uid = {ex.uid: text for ex, text in zip(examples, release)}
    index = PromptIndex(bench, examples)  # the prompt's final query -> the record it asks about
    with LoopbackServer(lambda prompt: by_uid[index.example(prompt).uid]) as server:
        result = run_annotate([
            f"data={name}", f"split={split}", f"limit={ROWS}", f"paths.data_dir={shared}",
            f"out_dir={tmp / 'replayed'}", f"teacher.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'hydra' / name / split}",
            f"teacher.backend.base_url={server.base_url}", "teacher.backend.model=palm-replay", "teacher.name=replay",
            f"teacher.backend.chat={str(chat).lower()}",
            "teacher.backend.stop=[]",  # PaLM's texts run on: nothing was cut
            "teacher.backend.max_concurrency=8", "progress=false", "strict=false",
        ])
        received = list(server.received)
    assert result.returncode == 0, result.stderr
    replayed = json.loads((tmp / "replayed" / name / "replay" / f"{split}_CoT_0.json").read_text())
    return release, replayed, received


@pytest.mark.shared
def test_replay_reproduces_the_release_and_its_batches(shared_data, tokenizer, tmp_path):
    from distill.data import DistillDataModule

    layout = tmp_path / "layout"  # records and both teachers' shards for the first ROWS rows
    for name, chat in (("svamp", False), ("cqa", True)):
        for split in ("train", "test"):
            release, replayed, received = replay(shared_data, tmp_path, name, split, chat)
            assert replayed == release  # the release's completions, in order, one per row
            assert len(received) == ROWS and all("stop" not in r.body for r in received)
            assert all(r.path.endswith("chat/completions" if chat else "/completions") for r in received)
            side = [json.loads(x) for x in
                    (tmp_path / "replayed" / name / "replay" / f"{split}_annotations.jsonl").read_text().splitlines()]
            assert [r["uid"] for r in side] == [f"{name}/{split}/{i}" for i in range(ROWS)]
            # the tmp layout the DataModule reads (never the project tree)
            lines = records_path(shared_data, name, split).read_text(encoding="utf-8").splitlines(keepends=True)
            records_path(layout, name, split).parent.mkdir(parents=True, exist_ok=True)
            records_path(layout, name, split).write_text("".join(lines[:ROWS]), encoding="utf-8")
            for teacher, texts in (("llm", release), ("replay", replayed)):
                (layout / name / teacher).mkdir(exist_ok=True)
                (layout / name / teacher / f"{split}_CoT_0.json").write_text(json.dumps(texts))

        def batches(teacher: str):
            dm = DistillDataModule(name, layout, tokenizer=tokenizer, teacher=teacher, batch_size=8,
                                   eval_batch_size=8, seed=0, cache_dir=None, targets="step_by_step")
            dm.setup("fit")
            return [b for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()) for b in loader]

        from_release, from_replay = batches("llm"), batches("replay")
        assert len(from_release) == len(from_replay) > 0
        assert any("rationale" in b for b in from_release)
        for a, b in zip(from_release, from_replay):
            assert a.keys() == b.keys() and a["uid"] == b["uid"]
            for task in ("label", "rationale"):
                if task in a:
                    for k in a[task]:
                        assert torch.equal(a[task][k], b[task][k])


@pytest.mark.shared
@pytest.mark.slow
def test_the_readme_teacher_recipe_on_data_without_llm(shared_data, tmp_path, monkeypatch, capsys):
    """README "Teacher rationales for your data", verbatim, on a copy of svamp without the release's
    llm/ shards (as a user's own data): a loopback teacher replays PaLM's answers; annotate.py writes
    the train shards, the summary gives the release's train figures (0.7325, 13 unparsed) and no
    teacher for test, train.py trains and tests, eval.py scores the run's checkpoint on test."""
    data = tmp_path / "data"
    for split in ("train", "test"):
        source = records_path(shared_data, "svamp", split)
        records_path(data, "svamp", split).parent.mkdir(parents=True, exist_ok=True)
        records_path(data, "svamp", split).write_bytes(source.read_bytes())
    assert not (data / "svamp" / "llm").exists()
    bench = get_benchmark("svamp")
    examples = load_file(bench, data, "train", teacher=None)[0]
    palm = dict(zip((e.uid for e in examples), read_teacher_completions(shared_data, "svamp", "llm", "train")[0]))
    index = PromptIndex(bench, examples)
    # paths by environment (conf/paths/default.yaml), so the commands stay the README's
    env = subprocess_env(DISTILL_DATA_DIR=str(data), DISTILL_CACHE_DIR=str(tmp_path / "cache"),
                         PROJECT_ROOT=str(tmp_path))

    def command(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    with LoopbackServer(lambda prompt: palm[index.example(prompt).uid]) as server:
        command("annotate.py", "data=svamp", "split=train", "teacher=openai",
                f"teacher.backend.base_url={server.base_url}", "teacher.backend.model=palm-replay",
                "teacher.name=mymodel")
    assert sorted(p.name for p in (data / "svamp" / "mymodel").glob("*_CoT_*.json")) == ["train_CoT_0.json"]

    # python -m distill.data summary data=svamp data.teacher=mymodel, in this process (same code, no start-up)
    for name in ("DISTILL_DATA_DIR", "DISTILL_CACHE_DIR", "PROJECT_ROOT"):
        monkeypatch.setenv(name, env[name])
    assert summary_main(["summary", "data=svamp", "data.teacher=mymodel"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("svamp_")}
    assert rows["svamp_train"][1:5] == ["800", "mymodel", "0.7325", "13"], out
    assert rows["svamp_test"][1:] == ["200", "-", "-", "-", "-"], out

    command("train.py", "data=svamp", "data.teacher=mymodel", *QUICK)
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and 0.0 <= results["metrics"]["test/acc"] <= 1.0
    evaluated = command("eval.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "split=test",
                        "trainer.limit_test_batches=1")
    assert re.search(r'"test/acc": [0-9.]+', evaluated.stdout)
