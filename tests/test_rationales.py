"""Several teacher samples per example: data.rationales (first | all | sample), the teacher_correct
filter, label_source=teacher_vote and its tie-break, the parsed-split cache key, the summary's
account; single_task with the rationale after the label."""

from __future__ import annotations

import pytest

from distill.benchmarks import get_benchmark
from distill.benchmarks.base import DataError
from distill.data import DistillDataModule
from distill.data.rationales import example_uid
from distill.data.splits import build_splits
from distill.data.summary import format_summary
from distill.data.targets import single_task_target, split_single_task_output
from distill.models.inference import labels_from_outputs

K = 3
N = 20


def answer(i: int, s: int) -> str | None:
    """Sample s of row i: "gold" (a + b), "wrong" (a - b) or None (no answer: does not parse)."""
    if s == 0:
        return "gold" if i % 2 == 0 else "wrong"
    if s == 1:
        return "gold" if i % 3 == 0 else "wrong"
    return None if i % 5 == 0 else "gold"


def completion(i: int, s: int) -> str:
    a, b = i + 2, i % 5 + 1
    kind = answer(i, s)
    said = " I am not sure." if kind is None else f" The answer is ({a} {'+' if kind == 'gold' else '-'} {b})."
    return f"Sample {s}: Sam has {a} marbles and finds {b} more.{said}"


@pytest.fixture
def samples_release(release):
    release.svamp("train", N)
    release.svamp("test", 6)
    for s in range(K):
        release.shards("svamp", "train", [completion(i, s) for i in range(N)], per_shard=7, teacher=f"llm/samples/{s}")
    return release.root


def row(uid: str) -> int:
    return int(example_uid(uid).rsplit("/", 1)[1])


def splits(data_dir, **kw):
    return build_splits(get_benchmark("svamp"), data_dir, teacher="llm", targets="step_by_step", **kw)


def test_first_is_the_papers_reading_whatever_samples_exist(samples_release, release):
    plain = splits(samples_release)
    assert not plain.rationale_counts and all("#" not in e.uid for e in plain.train)
    assert all(e.rationale.startswith("Sam has") for e in plain.train if e.rationale)  # the top-level shards


def test_several_samples_asked_of_a_one_sample_teacher_is_an_error(release):
    release.svamp("train", N)
    release.svamp("test", 6)
    for settings in ({"rationales": "all"}, {"rationales": "sample"}, {"label_source": "teacher_vote"}):
        with pytest.raises(DataError, match=r"(?s)needs several teacher samples per example.*teacher.samples=4"):
            splits(release.root, **settings)
    filtered = splits(release.root, rationale_filter="teacher_correct")  # filtering the one rationale is fine
    assert filtered.rationale_counts["train"]["samples_per_example"] == 1


def test_all_gives_one_row_per_sample_with_a_rationale(samples_release):
    built = splits(samples_release, rationales="all")
    examples = {example_uid(e.uid) for e in built.train}
    for uid in examples:
        rows = [e for e in built.train if example_uid(e.uid) == uid]
        expected = [s for s in range(K) if answer(row(uid), s) is not None]
        assert [int(e.uid.rsplit("#s", 1)[1]) for e in rows] == expected
        assert [e.rationale.split(":")[0] for e in rows] == [f"Sample {s}" for s in expected]
    counts = built.rationale_counts["train"]
    assert counts["examples"] == len(examples) == 18 and counts["samples_per_example"] == K
    assert counts["rows"] == len(built.train) == counts["candidates"] and counts["filtered"] == 0


def test_teacher_correct_keeps_exactly_the_correct_samples(samples_release):
    built = splits(samples_release, rationales="all", rationale_filter="teacher_correct")
    bench = get_benchmark("svamp")
    uids = {example_uid(e.uid) for e in built.train}
    kept = {(example_uid(e.uid), int(e.uid.rsplit("#s", 1)[1])) for e in built.train if e.rationale}
    assert kept == {(u, s) for u in uids for s in range(K) if answer(row(u), s) == "gold"}
    assert all(bench.score(e.teacher_label, e.gold) for e in built.train if e.rationale)
    # an example with no correct sample keeps one row: its label task alone
    none_right = [u for u in uids if all(answer(row(u), s) != "gold" for s in range(K))]
    assert none_right  # rows 5 and 15 (if not held out) have no correct sample
    for u in none_right:
        (only,) = [e for e in built.train if example_uid(e.uid) == u]
        assert only.uid == u and only.rationale is None
    counts = built.rationale_counts["train"]
    assert counts["kept"] == len(kept) and counts["label_only"] == len(none_right)
    assert counts["kept_share"] == len(kept) / counts["candidates"]
    # first + filter: the top-level rationale is kept where its label is right (every 4th row's is not)
    first = splits(samples_release, rationale_filter="teacher_correct")
    assert {e.uid for e in first.train if e.rationale} == {e.uid for e in first.train if row(e.uid) % 4 != 3}


def test_teacher_vote_is_the_majority_and_ties_go_to_the_earliest_sample(samples_release):
    built = splits(samples_release, rationales="all", label_source="teacher_vote")
    bench = get_benchmark("svamp")
    votes = {example_uid(e.uid): e.teacher_label for e in built.train}
    assert len(set(votes)) == 18 and all(e.teacher_label == votes[example_uid(e.uid)] for e in built.train)
    for uid, label in votes.items():
        i = row(uid)
        said = [answer(i, s) for s in range(K) if answer(i, s) is not None]
        gold, wrong = said.count("gold"), said.count("wrong")
        expected = "gold" if gold > wrong or (gold == wrong and said[0] == "gold") else "wrong"
        assert bench.score(label, f"( {i + 2}.0 + {i % 5 + 1}.0 )") == (expected == "gold"), uid
    # the tie rows: 10 (gold, wrong, -) votes gold; 15 (wrong, gold, -) votes wrong
    for uid in votes:
        if row(uid) in (10, 15):
            assert bench.score(votes[uid], f"( {row(uid) + 2}.0 + {row(uid) % 5 + 1}.0 )") == (row(uid) == 10)


def make(data_dir, tokenizer, tmp_path, **kwargs):
    settings = dict(benchmark="svamp", data_dir=data_dir, tokenizer=tokenizer, batch_size=6, eval_batch_size=6,
                    seed=0, cache_dir=tmp_path / "cache", split_files={"train": "train", "val": None, "test": "test"})
    settings.update(kwargs)
    dm = DistillDataModule(**settings)
    dm.setup("fit")
    return dm


def epoch_uids(sampler, epoch):
    sampler.set_epoch(epoch)
    return [i for batch in sampler for i in batch]


def test_sample_draws_one_row_per_example_each_epoch_seeded_and_resumable(samples_release, tokenizer, tmp_path):
    dm = make(samples_release, tokenizer, tmp_path, rationales="sample")
    uids = dm.dataset("train")["uid"]
    sampler = dm.train_sampler()
    assert sampler.steps_per_epoch == 3  # 18 examples, global batch 6: an epoch is the examples, not the rows
    epochs = [epoch_uids(sampler, e) for e in range(4)]
    for rows in epochs:
        assert sorted(example_uid(uids[i]) for i in rows) == sorted({example_uid(u) for u in uids})
    assert len({tuple(sorted(rows)) for rows in epochs}) > 1  # another epoch, other samples
    again = make(samples_release, tokenizer, tmp_path, rationales="sample").train_sampler()
    assert [epoch_uids(again, e) for e in range(4)] == epochs  # seeded
    resumed = make(samples_release, tokenizer, tmp_path, rationales="sample").train_sampler()
    resumed.resume_at(4)  # epoch 1, one step done: the rest of epoch 1 as the uninterrupted run drew it
    assert [i for batch in resumed for i in batch] == epochs[1][6:]
    other_seed = make(samples_release, tokenizer, tmp_path, rationales="sample", seed=1).train_sampler()
    assert [epoch_uids(other_seed, e) for e in range(4)] != epochs


def test_the_cache_key_and_the_summary_follow_the_settings(samples_release, tokenizer, tmp_path):
    versions = {}
    for settings in [{}, {"rationales": "all"}, {"rationales": "all", "rationale_filter": "teacher_correct"},
                     {"rationales": "all", "label_source": "teacher_vote"}]:
        dm = make(samples_release, tokenizer, tmp_path, **settings)
        versions[tuple(settings.items())] = dm.data_version
    assert len(set(versions.values())) == 4
    dm = make(samples_release, tokenizer, tmp_path, rationales="all", rationale_filter="teacher_correct")
    counts = dm.splits.rationale_counts["train"]  # read back from the cache
    assert counts["kept"] == sum(e.rationale is not None for e in dm.examples("train"))
    text = format_summary(dm)
    assert "Rationales (data.rationales=all, data.rationale_filter=teacher_correct" in text
    assert f"{counts['kept']} kept ({counts['kept_share']:.1%})" in text
    with pytest.raises(ValueError, match="data.rationales must be one of"):
        make(samples_release, tokenizer, tmp_path, rationales="every")


def test_rationale_after_puts_the_label_first_and_is_scored(samples_release, tokenizer, tmp_path):
    assert single_task_target("Add them.", "(2 + 3)", "after") == "(2 + 3) Explanation: Add them."
    assert single_task_target(None, "(2 + 3)", "after") == "(2 + 3)"
    assert single_task_target("Add them.", "(2 + 3)") == "Add them. So the answer is (2 + 3)"  # the paper's
    assert split_single_task_output("(2 + 3) explanation: add them.", "after") == ("add them.", "(2 + 3)")
    assert split_single_task_output("(2 + 3)", "after") == (None, "(2 + 3)")
    labels, rationales = labels_from_outputs(["(2 + 3) Explanation: Add them.", "5"], "single_task", "after")
    assert labels == ["(2 + 3)", "5"] and rationales == ["Add them.", None]
    bench = get_benchmark("svamp")
    assert bench.score(labels[0], "( 2.0 + 3.0 )")
    dm = make(samples_release, tokenizer, tmp_path, targets="single_task", rationale_position="after")
    batch = next(iter(dm.train_dataloader()))
    examples = {e.uid: e for e in dm.examples("train")}
    for i, uid in enumerate(batch["uid"]):
        text = tokenizer.decode([t for t in batch["label"]["labels"][i].tolist() if t >= 0]).replace("[SEP]", "")
        rationale, label = split_single_task_output(text, "after")
        assert bench.score(label, examples[uid].gold) and (rationale is None) == (examples[uid].rationale is None)
    before = make(samples_release, tokenizer, tmp_path, targets="single_task")
    assert before.dataset("train")["label_ids"] != dm.dataset("train")["label_ids"]  # not the cached "before"
