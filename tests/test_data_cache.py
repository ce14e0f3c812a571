"""The data cache: a warm start reads the parsed splits, the summary's figures and the tokenized
splits instead of rebuilding them; a changed file or setting is a new version; cold, warm and
uncached runs see the same examples, the same batches and the same summary."""

from __future__ import annotations

import os

import pytest
import torch

import distill.data.files as files_module
from distill.data import DistillDataModule
from distill.data.encoding import Encoder
from distill.data.summary import format_summary
from train_utils import REPO


@pytest.fixture
def svamp_files(release):
    release.svamp("train", 60, failures=[5, 17, 33])
    release.svamp("test", 20)
    return release.root


@pytest.fixture
def counters(monkeypatch):
    """How often records files are read and batches tokenized."""
    counts = {"read": 0, "encode": 0}
    read, encode = files_module.read_jsonl_numbered, Encoder.__call__

    def counted_read(*args, **kwargs):
        counts["read"] += 1
        return read(*args, **kwargs)

    def counted_encode(self, batch):
        counts["encode"] += 1
        return encode(self, batch)

    monkeypatch.setattr(files_module, "read_jsonl_numbered", counted_read)
    monkeypatch.setattr(Encoder, "__call__", counted_encode)
    return counts


def make(data_dir, tokenizer, cache_dir, **kwargs):
    settings = dict(benchmark="svamp", data_dir=data_dir, tokenizer=tokenizer, batch_size=8, eval_batch_size=6,
                    seed=0, cache_dir=cache_dir)
    settings.update(kwargs)
    return DistillDataModule(**settings)


def snapshot(dm):
    """Everything a run sees: examples, summary, train batches of two epochs, eval batches."""
    fields = lambda e: (e.uid, e.input, e.gold, e.teacher_label, e.rationale, e.teacher_error, dict(e.record))  # noqa: E731
    examples = {split: [fields(e) for e in dm.examples(split)] for split in ("train", "val", "test")}
    summary = format_summary(dm)
    dm.setup("fit")
    dm.setup("test")

    def plain(batch):
        return {k: plain(v) if isinstance(v, dict) else v.tolist() if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    train = [plain(b) for _ in range(2) for b in dm.train_dataloader()]
    evaluation = [plain(b) for b in dm.val_dataloader()] + [plain(b) for b in dm.test_dataloader()]
    return examples, summary, train, evaluation


def test_a_warm_start_reads_the_cache_and_sees_what_a_cold_one_did(svamp_files, tokenizer, tmp_path, counters):
    cold = snapshot(make(svamp_files, tokenizer, tmp_path / "cache"))
    assert counters["read"] == 2 and counters["encode"] > 0  # train and test files parsed, splits tokenized
    counters.update(read=0, encode=0)
    warm = snapshot(make(svamp_files, tokenizer, tmp_path / "cache"))
    assert counters == {"read": 0, "encode": 0}  # nothing reparsed, nothing retokenized
    assert warm == cold
    # and what today's uncached path gives
    assert snapshot(make(svamp_files, tokenizer, None)) == cold
    stored = {p.name.split("-")[0] for p in (tmp_path / "cache" / "svamp").iterdir()}
    assert {"splits", "summary", "train", "val", "test"} <= stored


def test_a_changed_file_or_setting_is_a_new_version(release, svamp_files, tokenizer, tmp_path, counters):
    cache = tmp_path / "cache"
    first = make(svamp_files, tokenizer, cache)
    version = first.data_version
    assert len(first.examples("train")) == 54 and make(svamp_files, tokenizer, cache).data_version == version
    # settings that choose the examples
    for setting in ({"fraction": 0.5}, {"holdout_seed": 3}, {"teacher": None}, {"targets": "standard"},
                    {"label_source": "teacher"}, {"on_parse_failure": "drop_example"}):
        assert make(svamp_files, tokenizer, cache, **setting).data_version != version, setting
    assert make(svamp_files, tokenizer, cache, fraction=0.5, seed=1).data_version != make(
        svamp_files, tokenizer, cache, fraction=0.5).data_version
    half = [e.uid for e in make(svamp_files, tokenizer, cache, fraction=0.5).examples("train")]
    assert len(half) == 27 and set(half) < {e.uid for e in first.examples("train")}
    # a rewritten records file: its new rows are read (the unchanged test file comes from the cache)
    release.svamp("train", 40)
    counters.update(read=0)
    again = make(svamp_files, tokenizer, cache)
    assert again.data_version != version and len(again.examples("train")) == 36 and counters["read"] == 1
    # a touched teacher shard (same content, new mtime) is noticed too
    shard = svamp_files / "svamp" / "llm" / "train_CoT_0.json"
    before = again.data_version
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert make(svamp_files, tokenizer, cache).data_version != before


def test_a_report_without_the_train_teacher_never_serves_training(release, tokenizer, tmp_path):
    """The summary's splits (teacher lacking train shards) share the cache but a run still gets its error."""
    from distill.benchmarks.base import DataError

    release.svamp("train", 30)
    _, completions = release.svamp("test", 12)
    release.shards("svamp", "test", completions, teacher="mine")
    report = make(release.root, tokenizer, tmp_path / "cache", teacher="mine", require_teacher=False)
    assert report.splits.missing_teacher and "mine:missing" in format_summary(report)
    with pytest.raises(DataError, match="python annotate.py data=svamp split=train"):
        make(release.root, tokenizer, tmp_path / "cache", teacher="mine").splits


def test_tokenizing_in_processes_gives_the_same_batches(svamp_files, tokenizer, tmp_path):
    one = make(svamp_files, tokenizer, tmp_path / "one", num_proc=1)
    two = make(svamp_files, tokenizer, tmp_path / "two", num_proc=2)
    assert len(two.dataset("train").cache_files) == 2  # two processes, two files
    assert two.dataset("train").to_dict() == one.dataset("train").to_dict()
    warm = make(svamp_files, tokenizer, tmp_path / "two", num_proc=2)
    assert warm.dataset("train").to_dict() == one.dataset("train").to_dict()


@pytest.mark.shared
def test_the_scale_benchmark_builds_esnli_train_in_the_release_layout(shared_data, tmp_path):
    """scripts/bench_scale.py's stand-in train file: valid rows repeated, completions lined up in 5,500-shards."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "scripts" / "bench_scale.py")
    bench_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_scale)
    build_esnli_train = bench_scale.build_esnli_train

    rows = build_esnli_train(tmp_path, repeats=2, shared=shared_data)
    assert rows == 2 * 9842
    shards = sorted((tmp_path / "esnli" / "llm").glob("train_CoT_*.json"))
    assert len(shards) == 4  # 3 x 5,500 + 3,184
    splits = DistillDataModule("esnli", tmp_path, split_files={"val": "valid"}, cache_dir=None).splits
    train, valid = splits.files["train"], splits.files["valid"]
    assert train.rows == rows and train.teacher == "llm" and train.teacher_correct == 2 * valid.teacher_correct
    assert len(splits.train) == rows and len(splits.val) == 9842 and len(splits.test) == 9824


def test_runs_selecting_other_examples_read_the_parsed_files(svamp_files, tokenizer, tmp_path, counters):
    """Another fraction, seed or method of a sweep selects from the files parsed once."""
    cache = tmp_path / "cache"
    first = make(svamp_files, tokenizer, cache, targets="step_by_step")
    first.splits
    assert counters["read"] == 2
    counters.update(read=0)
    uncached = lambda **kw: [e.uid for e in make(svamp_files, tokenizer, None, **kw).examples("train")]  # noqa: E731
    for setting in ({"fraction": 0.5}, {"fraction": 0.5, "seed": 3}, {"targets": "standard"},
                    {"label_source": "teacher"}):
        dm = make(svamp_files, tokenizer, cache, **setting)
        assert [e.uid for e in dm.examples("train")] == uncached(**setting), setting
    assert counters["read"] == 4 * 2  # the four uncached runs alone read the files (train and test each)
    # the seed picks nothing from the whole train: one version for every seed
    assert make(svamp_files, tokenizer, cache, seed=7).data_version == first.data_version
