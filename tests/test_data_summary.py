"""Configs compose (conf/data/*.yaml over _base), the jsonl benchmark comes from YAML alone,
the summary reports what it should, and the download fails clearly offline."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from distill.benchmarks.base import DataError
from distill.data import DistillDataModule
from distill.data.__main__ import compose_summary_config, main
from distill.data.download import DownloadError, download, unpack
from distill.data.summary import format_summary, length_stats

BENCHMARK_CONFIGS = ["esnli", "anli1", "cqa", "svamp"]


def write_all(release):
    release.nli("esnli", "valid", 30, failures=[2])
    release.nli("esnli", "test", 12)
    release.nli("anli1", "valid", 30, failures=[4, 9])
    release.nli("anli1", "test", 12)
    release.cqa("train", 30, failures=[1])
    release.cqa("test", 12)
    release.svamp("train", 30, failures=[0, 7])
    release.svamp("test", 12)


@pytest.mark.parametrize("name", BENCHMARK_CONFIGS)
def test_benchmark_configs_compose_and_build(release, tokenizer, tmp_path, name):
    write_all(release)
    overrides = [f"data={name}", f"paths.data_dir={release.root}", f"paths.cache_dir={tmp_path / 'cache'}",
                 "method=standard", "seed=5"]
    if name in ("esnli", "anli1"):
        overrides.append("data.split_files.train=valid")
    cfg = compose_summary_config(overrides)
    assert cfg.data._target_ == "distill.data.DistillDataModule"
    assert cfg.data.benchmark.name == name and cfg.data.batch_size == 64
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    assert isinstance(dm, DistillDataModule)
    assert (dm.targets, dm.seed, dm.cache_dir) == ("standard", 5, tmp_path / "cache")
    assert dm.benchmark.name == name and len(dm.examples("test")) == 12
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"]["input_ids"].shape[0] == 64 and "rationale" not in batch


def test_jsonl_benchmark_from_yaml_alone(release, tokenizer, tmp_path):
    rows = [
        {"id": f"r{i}", "question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no",
         "why": f"{i} {'is' if i % 2 == 0 else 'is not'} divisible by 2."}
        for i in range(40)
    ]
    release.records("parity", "train", rows[:30])
    release.records("parity", "test", rows[30:])
    cfg = compose_summary_config([
        "data=jsonl", f"paths.data_dir={release.root}", f"paths.cache_dir={tmp_path / 'cache'}",
        "data.benchmark.name=parity", "data.benchmark.input_fields=[question]", "data.benchmark.label_field=answer",
        "data.benchmark.label_space=[yes,no]", "data.benchmark.rationale_field=why", "data.benchmark.id_field=id",
        "data.batch_size=8",
    ])
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    assert (len(dm.examples("train")), len(dm.examples("val")), len(dm.examples("test"))) == (27, 3, 10)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "rationale" in batch and batch["uid"][0].startswith("r")
    text = tokenizer.decode([i for i in batch["rationale"]["labels"][0].tolist() if i >= 0])
    assert "divisible by 2" in text
    summary = format_summary(dm)
    assert "parity_train" in summary and "record" in summary


def test_summary_reports_files_splits_and_lengths(release, tokenizer):
    write_all(release)
    dm = DistillDataModule("svamp", release.root, tokenizer=tokenizer, seed=0)
    text = format_summary(dm)
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    # svamp train: 30 rows, 2 unparsed; the teacher answers a - b for every 4th (i % 4 == 3)
    train_file = lines["svamp_train"]
    assert train_file[1:3] == ["30", "llm"] and train_file[4] == "2"
    correct = sum(1 for i in range(30) if i not in (0, 7) and i % 4 != 3)
    assert train_file[3] == f"{correct / 30:.4f}"
    splits = text.split("Splits as used:")[1].split("Token lengths")[0]
    assert re.search(r"^\s+test\s+12\s", splits, re.M)  # test rows, untouched
    assert re.search(r"^\s+val\s+3\s", splits, re.M)  # 10% holdout of 30
    assert "Token lengths" in text and "p50/p90/p99/max" in text
    assert "train_CoT_0.json#0" in text  # unparsed completions are listed, not hidden
    assert length_stats([1, 2, 3, 100], limit=50) == "2/71/97/100 (1 > 50)"


def test_summary_command(release, tmp_path, capsys):
    write_all(release)
    assert main(["summary", "data=svamp", f"paths.data_dir={release.root}", f"paths.cache_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "svamp_train" in out and "Splits as used" in out
    # esnli here has no train file: the message names the override to use
    assert main(["summary", "data=esnli", f"paths.data_dir={release.root}"]) == 2
    assert "data.split_files.train=valid" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.shared
def test_summary_command_on_the_release(shared_data, capsys):
    assert main(["summary", "data=anli1", f"paths.data_dir={shared_data}", "data.split_files.train=valid"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("anli1_test"))
    assert row[1:5] == ["1000", "llm", "0.6560", "10"]
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("anli1_valid"))
    assert row[4] == "9"


def test_download_offline_fails_fast_with_instructions(tmp_path, capsys):
    with pytest.raises(DownloadError) as err:
        download(tmp_path / "d", url="http://127.0.0.1:9/datasets.zip", timeout=5)
    assert "by hand" in str(err.value) and "datasets.zip" in str(err.value) and str(tmp_path / "d") in str(err.value)
    assert not list((tmp_path / "d").iterdir())  # no partial archive left behind
    assert main(["download", "--dir", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/x.zip", "--timeout", "5"]) == 1
    assert "by hand" in capsys.readouterr().err


def _zip(path: Path, members: dict[str, str]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    path.write_bytes(buffer.getvalue())
    return path


def test_unpack_drops_the_datasets_folder_and_refuses_escapes(tmp_path):
    archive = _zip(tmp_path / "a.zip", {
        "datasets/svamp/svamp_train.json": json.dumps({"input": "q", "label": "(1 + 1)"}) + "\n",
        "datasets/svamp/llm/train_CoT_0.json": json.dumps(["r. The answer is (1 + 1)."]),
    })
    assert unpack(archive, tmp_path / "out") == ["svamp"]
    assert (tmp_path / "out" / "svamp" / "llm" / "train_CoT_0.json").is_file()
    evil = _zip(tmp_path / "b.zip", {"datasets/../../escape.txt": "x"})
    with pytest.raises(DownloadError, match="outside"):
        unpack(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_summary_of_a_teacher_with_train_shards_only(release, tmp_path, capsys):
    """The README recipe: annotate.py wrote mymodel's train shards; test has none and is scored on gold."""
    _, completions = release.svamp("train", 30, failures=[0, 7])
    release.svamp("test", 12)
    release.shards("svamp", "train", completions, teacher="mymodel")
    for extra in ([], ["data.label_source=teacher"], ["method=standard"]):
        assert main(["summary", "data=svamp", "data.teacher=mymodel", f"paths.data_dir={release.root}",
                     f"paths.cache_dir={tmp_path}", *extra]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("svamp_")}
        assert rows["svamp_train"][1:3] == ["30", "mymodel"] and rows["svamp_train"][4] == "2"
        assert rows["svamp_test"][1:] == ["12", "-", "-", "-", "-"]
        test_split = next(line.split() for line in out.splitlines() if line.strip().startswith("test "))
        assert test_split[1:5] == ["12", "-", "-", "-"]


def test_summary_warns_of_few_rationales_and_misaligned_shards(release, tokenizer):
    release.svamp("train", 90, failures=list(range(0, 90, 3)) + list(range(1, 90, 3)))
    release.svamp("test", 12)
    dm = DistillDataModule("svamp", release.root, tokenizer=tokenizer, seed=0, targets="step_by_step")
    assert re.search(r"WARNING: only \d+ of 81 train examples \(3\d%\) have a rationale", format_summary(dm))
    assert "WARNING" not in format_summary(DistillDataModule("svamp", release.root, tokenizer=tokenizer,
                                                             targets="standard"))
    _, completions = release.svamp("train", 90)
    release.shards("svamp", "train", completions[1:] + completions[:1])  # every completion one row off
    misaligned = DistillDataModule("svamp", release.root, tokenizer=tokenizer, targets="standard",
                                   on_misaligned_teacher="warn")
    text = format_summary(misaligned)
    assert "WARNING: train_CoT_0.json: the teacher's labels score right" in text and "chance" in text


def test_summary_of_a_teacher_with_test_shards_only(release, tmp_path, capsys):
    """A teacher tried on a few test items first: the summary reports its test figures and marks the
    train file it lacks with the annotate.py command; training keeps refusing it."""
    release.svamp("train", 30)
    _, completions = release.svamp("test", 12, failures=[5])
    release.shards("svamp", "test", completions, per_shard=5, teacher="mine")
    args = ["summary", "data=svamp", "data.teacher=mine", f"paths.data_dir={release.root}", f"paths.cache_dir={tmp_path}"]
    for extra in ([], ["data.label_source=teacher", "method=standard"]):
        assert main([*args, *extra]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("svamp_")}
        # the teacher's test figures: 12 rows, 1 unparsed, every 4th answer a - b (i % 4 == 3)
        correct = sum(1 for i in range(12) if i != 5 and i % 4 != 3)
        assert rows["svamp_test"][1:] == ["12", "mine", f"{correct / 12:.4f}", "1", "0"]
        assert rows["svamp_train"][1:] == ["30", "mine:missing", "-", "-", "-"]
        test_split = next(line.split() for line in out.splitlines() if line.strip().startswith("test "))
        assert test_split[1:5] == ["12", f"{correct / 12:.4f}", "1", "0"]
        note = next(line for line in out.splitlines() if line.startswith("NOTE:"))
        assert "teacher mine has no shards of svamp_train (split(s) train, val" in note
        assert str(release.root / "svamp" / "mine" / "train_CoT_0.json") in note
        assert (f"python annotate.py data=svamp split=train paths.data_dir={release.root} teacher=openai "
                "teacher.backend.base_url=URL teacher.backend.model=MODEL teacher.name=mine") in out
        assert "WARNING" not in out
    # a training run keeps today's error
    with pytest.raises(DataError, match="python annotate.py data=svamp split=train"):
        DistillDataModule("svamp", release.root, teacher="mine", targets="step_by_step").splits


def test_the_encoder_counts_tokens_before_truncation(tokenizer):
    """The summary reads each row's token counts from the tokenized split: counted before truncation (so it
    can say how many rows are cut) while the ids are those of a truncating tokenizer; the tokenizer's own
    truncation setting neither applies nor changes."""
    from distill.data.encoding import Encoder

    texts = ["", "Sam has 3 marbles.", "a " * 700, "Premise[SEP]Hypothesis"]
    tokenizer(["a " * 50], truncation=True, max_length=8)
    counts = lambda xs, special: [len(ids) for ids in tokenizer(xs, add_special_tokens=special)["input_ids"]]  # noqa: E731
    inputs = ["[label] " + t for t in texts]
    for kind in ("seq2seq", "causal"):
        encoder = Encoder(tokenizer, "[label] ", "[rationale] ", 16, 8, 12, rationale_task=True, student_kind=kind)
        out = encoder({"input": texts, "target": texts, "rationale": [None, *texts[1:]]})
        start = 1 if kind == "causal" else 0  # [CLS] alone before a causal prompt
        assert out["input_tokens"] == (counts(inputs, True) if kind == "seq2seq"
                                       else [start + n for n in counts(inputs, False)])
        assert out["label_tokens"] == [n + 1 for n in counts(texts, False)]
        assert out["rationale_tokens"] == [0] + [n + 1 for n in counts(texts[1:], False)]
        assert max(out["input_tokens"]) > 700 and max(map(len, out["label_input_ids"])) == 16
        assert [len(ids) for ids in out["rationale_ids"]] == [min(n, out_n) for n, out_n in
                                                              zip(out["rationale_tokens"], [0, 12, 12, 12])]
    assert Encoder(tokenizer, "[label] ", "", 16, 8, 12, rationale_task=False)(
        {"input": texts, "target": texts, "rationale": texts})["label_input_ids"] == tokenizer(
        inputs, truncation=True, max_length=16)["input_ids"]
