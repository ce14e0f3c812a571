"""Splits: official val or seeded holdout, file remap, nested fractions, label_source,
parse-failure handling, shard order. Small made-up files in the release layout."""

from __future__ import annotations

import pytest

from distill.benchmarks import get_benchmark
from distill.benchmarks.base import DataError
from distill.data import DistillDataModule
from distill.data.encoding import target_text
from distill.data.splits import build_splits, holdout, nested_subset


def uids(examples):
    return [e.uid for e in examples]


def test_holdout_is_seeded_disjoint_and_ten_percent(release):
    release.svamp("train", 200)
    release.svamp("test", 30)
    svamp = get_benchmark("svamp")
    a = build_splits(svamp, release.root, seed=1)
    b = build_splits(svamp, release.root, seed=2)  # the run seed does not move val
    c = build_splits(svamp, release.root, seed=1, holdout_seed=5)
    assert len(a.val) == 20 and len(a.train) == 180
    assert not set(uids(a.train)) & set(uids(a.val))
    assert set(uids(a.train)) | set(uids(a.val)) == {f"svamp/train/{i}" for i in range(200)}
    assert uids(a.val) == uids(b.val)
    assert uids(a.val) != uids(c.val)
    assert uids(a.test) == [f"svamp/test/{i}" for i in range(30)]
    assert "holdout" in a.sources["val"]


def test_test_subset_is_one_fixed_subset_for_every_run(release):
    release.svamp("train", 100)
    release.svamp("test", 50)
    svamp = get_benchmark("svamp")
    runs = [build_splits(svamp, release.root, seed=seed, fraction=fraction, targets=targets, test_subset=20)
            for seed, fraction, targets in [(0, 1.0, "standard"), (3, 0.5, "step_by_step")]]
    picked = uids(runs[0].test)
    assert len(picked) == 20 and picked == uids(runs[1].test)
    assert picked == sorted(picked, key=lambda u: int(u.rsplit("/", 1)[1]))  # file order
    assert picked != [f"svamp/test/{i}" for i in range(20)]  # a draw, not the head of the file
    assert "a fixed subset of 20 of 50" in runs[0].sources["test"]
    assert uids(build_splits(svamp, release.root, test_subset=500).test) == [f"svamp/test/{i}" for i in range(50)]


def test_official_validation_file_is_used_when_configured(release):
    for split, n in [("train", 40), ("valid", 12), ("test", 9)]:
        release.nli("esnli", split, n)
    s = build_splits(get_benchmark("esnli"), release.root, split_files={"val": "valid"})
    assert (len(s.train), len(s.val), len(s.test)) == (40, 12, 9)
    assert all(u.startswith("esnli/valid/") for u in uids(s.val))


def test_remapped_train_file_then_holds_out_val(release):
    release.nli("anli1", "valid", 50)
    release.nli("anli1", "test", 10)
    s = build_splits(get_benchmark("anli1"), release.root, split_files={"train": "valid", "val": "valid"})
    assert (len(s.train), len(s.val), len(s.test)) == (45, 5, 10)
    assert all(u.startswith("anli1/valid/") for u in uids(s.train) + uids(s.val))
    assert not set(uids(s.train)) & set(uids(s.val))
    assert set(s.files) == {"valid", "test"}


def test_test_file_can_never_feed_training(release):
    release.svamp("train", 20)
    release.svamp("test", 10)
    with pytest.raises(DataError, match="never select on test"):
        build_splits(get_benchmark("svamp"), release.root, split_files={"train": "test"})


def test_fractions_are_nested_and_seeded(release):
    release.cqa("train", 400)
    release.cqa("test", 20)
    cqa = get_benchmark("cqa")
    by_fraction = {f: build_splits(cqa, release.root, fraction=f, seed=3) for f in (1.0, 0.5, 0.25, 0.125)}
    sets = {f: set(uids(s.train)) for f, s in by_fraction.items()}
    assert [len(sets[f]) for f in (1.0, 0.5, 0.25, 0.125)] == [360, 180, 90, 45]
    assert sets[0.125] < sets[0.25] < sets[0.5] < sets[1.0]
    # val and test do not depend on the fraction; test is never subsampled
    assert len({tuple(uids(s.val)) for s in by_fraction.values()}) == 1
    assert all(uids(s.test) == uids(by_fraction[1.0].test) for s in by_fraction.values())
    other_seed = set(uids(build_splits(cqa, release.root, fraction=0.25, seed=4).train))
    assert other_seed != sets[0.25]
    assert set(nested_subset(100, 0.1, 0)) <= set(nested_subset(100, 0.2, 0))
    with pytest.raises(ValueError):
        nested_subset(10, 0.0, 0)
    with pytest.raises(ValueError):
        holdout(10, 1.0, 0)


def test_label_source_and_parse_failures(release):
    failures = [3, 8, 13]
    release.svamp("train", 20, failures=failures)
    release.svamp("test", 10, failures=[1])
    svamp = get_benchmark("svamp")
    gold = build_splits(svamp, release.root)
    failed = {int(e.uid.rsplit("/", 1)[1]): e for e in gold.train + gold.val if e.teacher_error}
    assert sorted(failed) == failures
    # default: the label task stays (gold label), the rationale task goes; the error names shard#index
    assert all(e.rationale is None and e.teacher_label is None and e.gold for e in failed.values())
    assert failed[3].teacher_error.startswith("train_CoT_0.json#3: ")
    assert gold.dropped["train"] == 0 and gold.files["train"].parse_failures == 3
    assert gold.files["test"].parse_failures == 1 and len(gold.test) == 10  # never dropped from test

    teacher = build_splits(svamp, release.root, label_source="teacher")
    n_failed_in_train = sum(1 for e in build_splits(svamp, release.root).train if e.teacher_error)
    assert teacher.dropped["train"] == n_failed_in_train
    assert all(e.teacher_label is not None for e in teacher.train)
    wrong = [e for e in teacher.train if not svamp.score(e.teacher_label, e.gold)]
    # the target the data module trains on (target_text): the teacher's label, wrong ones too, or gold
    assert wrong and all(target_text(e, "standard", "teacher") == e.teacher_label != e.gold for e in wrong)
    assert all(target_text(e, "step_by_step", "gold") == e.gold for e in teacher.train)

    dropped = build_splits(svamp, release.root, on_parse_failure="drop_example")
    assert dropped.dropped["train"] == n_failed_in_train and not any(e.teacher_error for e in dropped.train)
    with pytest.raises(DataError, match="could not be parsed"):
        build_splits(svamp, release.root, on_parse_failure="error")
    with pytest.raises(ValueError):
        build_splits(svamp, release.root, label_source="oracle")


def test_shards_are_read_in_numeric_order(release):
    # 12 shards of 1: a lexical sort would put _CoT_10 and _CoT_11 before _CoT_2
    _, completions = release.cqa("train", 12, per_shard=1)
    release.cqa("test", 3)
    assert len(list((release.root / "cqa" / "llm").glob("train_CoT_*.json"))) == 12
    s = build_splits(get_benchmark("cqa"), release.root, holdout_fraction=0.25)
    for example in s.train + s.val:
        i = int(example.uid.rsplit("/", 1)[1])
        assert example.rationale == f"Thing {i} belongs somewhere."


def test_without_a_teacher(release):
    release.svamp("train", 20)
    release.svamp("test", 5)
    s = build_splits(get_benchmark("svamp"), release.root, teacher=None)
    assert all(e.rationale is None and e.teacher_label is None for e in s.train)
    assert s.files["train"].teacher is None
    with pytest.raises(DataError, match="data.teacher"):
        build_splits(get_benchmark("svamp"), release.root, teacher=None, label_source="teacher")


def test_only_the_splits_training_reads_need_a_teacher(release):
    """Test, and val from its own file, are scored on gold: a file without shards of the teacher
    gets none. Train needs the teacher when the method or the label source uses it."""
    svamp = get_benchmark("svamp")
    _, completions = release.svamp("train", 20)
    release.svamp("test", 5)  # the release's own teacher (llm) only
    release.shards("svamp", "train", completions, teacher="mymodel")
    for targets, label_source in [("step_by_step", "gold"), ("single_task", "gold"), ("standard", "teacher")]:
        s = DistillDataModule(svamp, release.root, teacher="mymodel", targets=targets, label_source=label_source).splits
        assert s.files["train"].teacher == "mymodel" and s.files["test"].teacher is None
        assert all(e.teacher_label is None and e.rationale is None for e in s.test) and len(s.test) == 5
        assert any(e.rationale for e in s.train)
    # a split with shards keeps its teacher figures (the release's test accuracy)
    assert DistillDataModule(svamp, release.root, teacher="llm").splits.files["test"].teacher == "llm"

    release.nli("esnli", "train", 20)
    release.nli("esnli", "valid", 10)
    release.nli("esnli", "test", 10)
    for split in ("valid", "test"):
        for shard in (release.root / "esnli" / "llm").glob(f"{split}_CoT_*.json"):
            shard.unlink()
    s = DistillDataModule("esnli", release.root, split_files={"val": "valid"}, targets="step_by_step").splits
    assert s.files["valid"].teacher is None and s.files["test"].teacher is None and s.files["train"].teacher == "llm"


def test_a_missing_train_teacher_names_the_annotate_command(release):
    svamp = get_benchmark("svamp")
    release.svamp("train", 20)
    release.svamp("test", 5)
    for targets, label_source, why in [("step_by_step", "gold", "method step_by_step"),
                                       ("standard", "teacher", "data.label_source=teacher")]:
        with pytest.raises(DataError) as err:
            DistillDataModule(svamp, release.root, teacher="mymodel", targets=targets, label_source=label_source).splits
        message = str(err.value)
        assert str(release.root / "svamp" / "mymodel" / "train_CoT_0.json") in message and why in message
        assert (f"python annotate.py data=svamp split=train paths.data_dir={release.root} teacher=openai "
                "teacher.backend.base_url=URL teacher.backend.model=MODEL teacher.name=mymodel") in message
    # standard finetuning on gold labels reads no teacher: train without one
    s = DistillDataModule(svamp, release.root, teacher="mymodel", targets="standard", label_source="gold").splits
    assert s.files["train"].teacher is None and s.files["test"].teacher is None
    # the train file is another file split: the command annotates that one
    release.nli("anli1", "valid", 20)
    release.nli("anli1", "test", 5)
    with pytest.raises(DataError, match="python annotate.py data=anli1 split=valid "):
        DistillDataModule("anli1", release.root, teacher="mymodel", split_files={"train": "valid"}).splits


def test_step_by_step_needs_a_rationale_on_some_train_example(release):
    svamp = get_benchmark("svamp")
    release.svamp("train", 20, failures=list(range(20)))  # not one completion parses
    release.svamp("test", 5)
    with pytest.raises(DataError, match=r"method=step_by_step .* none of the 18 train examples .* has a rationale"):
        DistillDataModule(svamp, release.root, targets="step_by_step").splits
    with pytest.raises(DataError, match="none of the 18 train examples"):
        DistillDataModule(svamp, release.root, teacher=None, targets="step_by_step").splits
    assert len(DistillDataModule(svamp, release.root, targets="standard").examples("train")) == 18  # label task alone
