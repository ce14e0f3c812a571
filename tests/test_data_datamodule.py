"""DistillDataModule: batch layout, padding, prefixes, determinism, workers, ranks, cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from distill.data import DistillDataModule
from distill.data.batching import BatchPlan, GlobalBatchSampler
from distill.data.targets import split_single_task_output


@pytest.fixture
def svamp_files(release):
    release.svamp("train", 60, failures=[5, 17, 33])
    release.svamp("test", 20)
    return release.root


def make(data_dir, tokenizer, tmp_path, **kwargs):
    settings = dict(
        benchmark="svamp",
        data_dir=data_dir,
        tokenizer=tokenizer,
        batch_size=8,
        eval_batch_size=6,
        seed=0,
        cache_dir=tmp_path / "cache",
    )
    settings.update(kwargs)
    dm = DistillDataModule(**settings)
    dm.setup("fit")
    return dm


def decode(tokenizer, ids):
    return tokenizer.decode([i for i in ids.tolist() if i >= 0])


def step_uids(dm, steps):
    """uids per optimizer step: accumulate micro-batches each."""
    out, batches = [], iter(dm.train_dataloader())
    accumulate = dm.batch_plan.accumulate_grad_batches
    for _ in range(steps):
        step = []
        for _ in range(accumulate):
            step += next(batches)["uid"]
        out.append(step)
    return out


def test_train_batch_layout_and_padding(svamp_files, tokenizer, tmp_path):
    dm = make(svamp_files, tokenizer, tmp_path, micro_batch_size=4)
    examples = {e.uid: e for e in dm.examples("train")}
    for batch in dm.train_dataloader():
        assert set(batch) <= {"label", "rationale", "uid"} and {"label", "uid"} <= set(batch)
        for task in [k for k in ("label", "rationale") if k in batch]:
            t = batch[task]
            assert set(t) == {"input_ids", "attention_mask", "labels", "target_positions", "target_ids"}
            assert t["input_ids"].shape == t["attention_mask"].shape and t["input_ids"].shape[0] == 4
            # where the targets are, row-major, computed on the host for the loss
            rows, cols = t["target_positions"].unbind(1)
            assert torch.equal(t["labels"][rows, cols], t["target_ids"])
            assert int((t["labels"] != -100).sum()) == len(t["target_ids"])
            lengths = t["attention_mask"].sum(1)
            # dynamic padding: as wide as the longest row of this micro-batch, not max_input_length
            assert t["input_ids"].shape[1] == int(lengths.max()) < dm.max_input_length
            for row, n in enumerate(lengths.tolist()):
                assert (t["input_ids"][row, n:] == tokenizer.pad_token_id).all()
            labels = t["labels"]
            assert ((labels >= 0) | (labels == -100)).all()
            widths = (labels != -100).sum(1)
            assert labels.shape[1] == max(1, int(widths.max()))
            for row, n in enumerate(widths.tolist()):
                if n:
                    assert labels[row, n - 1] == tokenizer.eos_token_id  # targets end with eos
        label_text = decode(tokenizer, batch["label"]["input_ids"][0])
        assert label_text.startswith("[CLS] [ label ]")
        uid = batch["uid"][0]
        assert decode(tokenizer, batch["label"]["labels"][0]).replace(" ", "") == examples[uid].gold.replace(" ", "") + "[SEP]"
        if "rationale" in batch:
            assert decode(tokenizer, batch["rationale"]["input_ids"][0]).startswith("[CLS] [ rationale ]")
            for row, uid in enumerate(batch["uid"]):
                has = bool((batch["rationale"]["labels"][row] != -100).any())
                assert has == (examples[uid].rationale is not None)


def test_rationale_key_absent_when_no_row_has_one(release, tokenizer, tmp_path):
    release.svamp("train", 24, failures=list(range(1, 24)))  # only row 0 has a rationale
    release.svamp("test", 4)
    dm = make(release.root, tokenizer, tmp_path, micro_batch_size=1)
    batches = list(dm.train_dataloader())
    assert all(("rationale" in b) == (b["uid"] == ["svamp/train/0"]) for b in batches)
    assert any("rationale" in b for b in batches) or "svamp/train/0" not in {e.uid for e in dm.examples("train")}
    standard = make(release.root, tokenizer, tmp_path, targets="standard")
    assert all("rationale" not in b for b in standard.train_dataloader())
    # standard finetuning uses no prefix, as the official standard model
    batch = next(iter(standard.train_dataloader()))
    assert decode(tokenizer, batch["label"]["input_ids"][0]).startswith("[CLS] sam has")


def test_official_prefixes(svamp_files, tokenizer, tmp_path):
    dm = make(svamp_files, tokenizer, tmp_path, label_prefix="predict: ", rationale_prefix="explain: ")
    batch = next(b for b in dm.train_dataloader() if "rationale" in b)
    assert decode(tokenizer, batch["label"]["input_ids"][0]).startswith("[CLS] predict :")
    assert decode(tokenizer, batch["rationale"]["input_ids"][0]).startswith("[CLS] explain :")


def test_eval_batches(svamp_files, tokenizer, tmp_path):
    dm = make(svamp_files, tokenizer, tmp_path)
    dm.setup("test")
    for loader, split in [(dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")]:
        batches = list(loader)
        assert sum(len(b["uid"]) for b in batches) == len(dm.examples(split))
        assert sorted(u for b in batches for u in b["uid"]) == sorted(e.uid for e in dm.examples(split))
        widths = [b["label"]["input_ids"].shape[1] for b in batches]
        assert widths == sorted(widths, reverse=True)  # longest first, no shuffle
        b = batches[0]
        assert set(b) == {"label", "uid", "input", "gold"}
        assert len(b["uid"]) <= 6 and all(isinstance(g, str) for g in b["gold"])
        gold = {e.uid: e.gold for e in dm.examples(split)}
        assert b["gold"] == [gold[u] for u in b["uid"]]
    assert [b["uid"] for b in dm.val_dataloader()] == [b["uid"] for b in dm.val_dataloader()]


def test_deterministic_under_a_seed(svamp_files, tokenizer, tmp_path):
    a = step_uids(make(svamp_files, tokenizer, tmp_path, seed=7), 7)
    b = step_uids(make(svamp_files, tokenizer, tmp_path, seed=7), 7)
    c = step_uids(make(svamp_files, tokenizer, tmp_path, seed=8), 7)
    assert a == b and a != c
    dm = make(svamp_files, tokenizer, tmp_path, seed=7)
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(1)  # what Lightning calls each epoch
    assert [x["uid"] for x in loader][:7] != a


def test_num_workers_gives_the_same_batches(svamp_files, tokenizer, tmp_path):
    serial = make(svamp_files, tokenizer, tmp_path, micro_batch_size=4)
    workers = make(svamp_files, tokenizer, tmp_path, micro_batch_size=4, num_workers=2)
    got = list(workers.train_dataloader())
    want = list(serial.train_dataloader())
    assert [b["uid"] for b in got] == [b["uid"] for b in want]
    assert all(torch.equal(x["label"]["input_ids"], y["label"]["input_ids"]) for x, y in zip(got, want))
    assert [b["uid"] for b in workers.val_dataloader()] == [b["uid"] for b in serial.val_dataloader()]


def test_global_batch_is_shared_by_ranks(svamp_files, tokenizer, tmp_path):
    one = make(svamp_files, tokenizer, tmp_path, batch_size=8, micro_batch_size=2)
    assert one.batch_plan == BatchPlan(8, 1, 2, 4)  # one process until a run connects its plan
    one_steps = step_uids(one, 7)
    two_steps = [[], []]
    for rank in (0, 1):
        dm = make(svamp_files, tokenizer, tmp_path, batch_size=8, micro_batch_size=2)
        dm.connect(BatchPlan.of(8, 2, 2))
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        dm.setup("fit")
        two_steps[rank] = step_uids(dm, 7)
    for step, (r0, r1) in enumerate(zip(*two_steps)):
        assert len(r0) == len(r1) == 4
        assert sorted(r0 + r1) == sorted(one_steps[step])
    with pytest.raises(ValueError, match="global batch of 16"):
        dm.connect(BatchPlan.of(16, 2, 2))  # a plan for another global batch
    dm.setup("test")  # evaluation shards over the trainer's processes
    assert (dm.world_size, dm.rank) == (2, 1)
    # a rank the plan has no place for: its train batches are refused
    dm = make(svamp_files, tokenizer, tmp_path, batch_size=8, micro_batch_size=2)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    dm.setup("fit")
    with pytest.raises(ValueError, match="rank 1 is outside world size 1"):
        dm.train_dataloader()


def test_batch_plans():
    assert BatchPlan.of(64, 2, 8) == BatchPlan(global_batch_size=64, world_size=2, micro_batch_size=8,
                                               accumulate_grad_batches=4)
    plans = [BatchPlan.of(*args) for args in [(64, 1), (64, 2), (64, 2, 8), (64, 1, 16)]]
    assert [(p.micro_batch_size, p.accumulate_grad_batches) for p in plans] == [(64, 1), (32, 1), (8, 4), (16, 4)]
    for args in [(64, 3), (64, 2, 24), (0, 1)]:
        with pytest.raises(ValueError):
            BatchPlan.of(*args)


def test_sampler_groups_lengths_and_fills_the_last_batch():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47, 9, 46]
    sampler = GlobalBatchSampler(lengths, BatchPlan.of(4, 1, 2), seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6  # ceil(10 / 4) steps x 2 micro-batches
    assert all(len(b) == 2 for b in batches)
    seen = [i for b in batches for i in b]
    assert set(seen) == set(range(10)) and len(seen) == 12  # 2 wrap around to fill the last step
    for step in range(3):
        first, second = batches[2 * step], batches[2 * step + 1]
        assert min(lengths[i] for i in first) >= max(lengths[i] for i in second)
    assert len(list(GlobalBatchSampler(lengths, BatchPlan.of(4, 1, 2), drop_last=True))) == 4
    tiny = GlobalBatchSampler([3, 4], BatchPlan.of(8))
    assert [sorted(b) for b in tiny] == [[0, 0, 0, 0, 1, 1, 1, 1]]


def test_tokenization_is_cached_on_disk(svamp_files, tokenizer, tmp_path):
    make(svamp_files, tokenizer, tmp_path)
    files = sorted((tmp_path / "cache" / "svamp").glob("*.arrow"))
    assert [f.name.split("-")[0] for f in files] == ["train", "val"]
    again = make(svamp_files, tokenizer, tmp_path)
    assert sorted((tmp_path / "cache" / "svamp").glob("*.arrow")) == files
    assert {f["filename"] for f in again.dataset("train").cache_files} & {str(f) for f in files}
    make(svamp_files, tokenizer, tmp_path, label_prefix="predict: ")  # new settings, new file
    assert len(list((tmp_path / "cache" / "svamp").glob("train-*.arrow"))) == 2
    nocache = make(svamp_files, tokenizer, tmp_path, cache_dir=None)
    assert len(nocache.dataset("train")) == len(again.dataset("train"))


def test_single_task_targets(svamp_files, tokenizer, tmp_path):
    dm = make(svamp_files, tokenizer, tmp_path, targets="single_task")
    examples = {e.uid: e for e in dm.examples("train")}
    batch = next(iter(dm.train_dataloader()))
    assert "rationale" not in batch
    for row, uid in enumerate(batch["uid"]):
        text = decode(tokenizer, batch["label"]["labels"][row]).replace("[SEP]", "")
        rationale, label = split_single_task_output(text)
        assert label.replace(" ", "") == examples[uid].gold.replace(" ", "")
        assert (rationale is None) == (examples[uid].rationale is None)


def test_teacher_labels_in_train_batches(svamp_files, tokenizer, tmp_path):
    dm = make(svamp_files, tokenizer, tmp_path, label_source="teacher")
    examples = {e.uid: e for e in dm.examples("train")}
    assert all(e.teacher_label for e in examples.values()) and dm.splits.dropped["train"] >= 1
    seen_wrong = False
    for batch in dm.train_dataloader():
        for row, uid in enumerate(batch["uid"]):
            text = decode(tokenizer, batch["label"]["labels"][row]).replace("[SEP]", "").replace(" ", "")
            assert text == examples[uid].teacher_label.replace(" ", "")
            seen_wrong |= not dm.benchmark.score(examples[uid].teacher_label, examples[uid].gold)
    assert seen_wrong
    val = next(iter(dm.val_dataloader()))  # evaluation stays on gold labels
    gold = {e.uid: e.gold for e in dm.examples("val")}
    assert val["gold"] == [gold[u] for u in val["uid"]]


def test_nli_input_uses_the_tokenizer_eos(release, tokenizer, tmp_path):
    release.nli("esnli", "valid", 30)
    release.nli("esnli", "test", 6)
    dm = make(release.root, tokenizer, tmp_path, benchmark="esnli", split_files={"train": "valid", "val": None})
    assert "[SEP]" in dm.examples("train")[0].input
    batch = next(iter(dm.train_dataloader()))
    assert decode(tokenizer, batch["label"]["input_ids"][0]).count("[SEP]") == 2


def test_bad_settings_fail_at_construction(svamp_files, tokenizer):
    with pytest.raises(ValueError, match=r"method.name='both': expected one of \('standard'"):
        DistillDataModule("svamp", svamp_files, tokenizer=tokenizer, targets="both")
    with pytest.raises(ValueError, match="micro_batch_size"):
        DistillDataModule("svamp", svamp_files, tokenizer=tokenizer, batch_size=64, micro_batch_size=48)


def test_the_defaults_in_code_are_the_configs():
    """conf/data/_base.yaml owns the data settings: where the data module and build_splits have defaults
    (tests build them directly), those are the config's."""
    import inspect

    from omegaconf import OmegaConf

    from distill.data.splits import build_splits

    base = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "_base.yaml")
    settings = {key: base[key] for key in base if not OmegaConf.is_interpolation(base, key) and key != "_target_"}
    settings["split_files"] = None if OmegaConf.to_container(base.split_files) == {
        "train": "train", "val": None, "test": "test"} else "differs"  # None: the files of the paper's layout
    checked = 0
    for function in (DistillDataModule, build_splits):
        for key, parameter in inspect.signature(function).parameters.items():
            if key in settings:
                assert parameter.default == settings[key], (function.__name__, key)
                checked += 1
    assert checked > 35


def test_collator_pads_each_batch_to_its_longest_row():
    from distill.data.collate import Collator

    rows = [{"uid": "a", "label_input_ids": [5, 6, 7], "label_ids": [8, 9]},
            {"uid": "b", "label_input_ids": [5], "label_ids": [8, 9, 10, 11, 12]}]
    batch = Collator(pad_token_id=0, train=True)(rows)["label"]
    assert batch["input_ids"].shape == (2, 3) and batch["labels"].shape == (2, 5)
    assert batch["attention_mask"].sum().item() == 4
    assert batch["target_ids"].tolist() == [8, 9, 8, 9, 10, 11, 12]
    assert batch["target_positions"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4]]
