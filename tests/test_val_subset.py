"""data.val_subset: validation on a fixed random subset of val, the same for every run of a sweep,
unbiased where trainer.limit_val_batches (evaluation batches come longest first) keeps the longest
examples; and :func:`distill.data.summary.validation_note`, which says what such a limit leaves."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from distill.benchmarks import get_benchmark
from distill.data import DistillDataModule
from distill.data.splits import build_splits
from distill.data.summary import validation_note

REPO = Path(__file__).resolve().parents[1]
ESNLI_FILES = {"train": "valid", "val": None, "test": "test"}  # the shared copy has no train file


def uids(examples):
    return [e.uid for e in examples]


def file_order(examples) -> bool:
    indices = [int(u.rsplit("/", 1)[1]) for u in uids(examples)]
    return indices == sorted(indices)


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ---------------------------------------------------------------------------- on e-SNLI's release
@pytest.mark.shared
def test_esnli_subset_is_representative_and_the_longest_are_not(shared_data: Path) -> None:
    """The 320-example subset of e-SNLI's 984-example holdout has its label mix and mean input length
    (within 3 standard errors of a 320-example mean); the 320 longest (limit_val_batches=5 of 64) do not."""
    esnli = get_benchmark("esnli")
    holdout = build_splits(esnli, shared_data, teacher=None, split_files=ESNLI_FILES, targets="standard").val
    subset = build_splits(esnli, shared_data, teacher=None, split_files=ESNLI_FILES, targets="standard",
                          val_subset=320).val
    longest = sorted(holdout, key=lambda e: -len(e.input))[:320]
    assert len(holdout) == 984 and len(subset) == 320

    shares = {label: n / len(holdout) for label, n in Counter(e.gold for e in holdout).items()}
    subset_shares = Counter(e.gold for e in subset)
    for label, p in shares.items():
        se = math.sqrt(p * (1 - p) / len(subset))
        assert abs(subset_shares[label] / len(subset) - p) < 3 * se, label

    mean, sd = mean_and_sd([len(e.input) for e in holdout])
    se = sd / math.sqrt(320)

    def within(examples) -> bool:
        return abs(sum(len(e.input) for e in examples) / len(examples) - mean) < 3 * se

    assert within(subset)
    assert not within(longest)


# ---------------------------------------------------------------------------- on made-up files
def test_val_subset_is_one_fixed_subset_of_the_holdout_for_every_run(release) -> None:
    release.svamp("train", 300)
    release.svamp("test", 50)
    svamp = get_benchmark("svamp")
    whole = build_splits(svamp, release.root)
    runs = [build_splits(svamp, release.root, seed=seed, fraction=fraction, targets=targets, val_subset=12)
            for seed, fraction, targets in [(0, 1.0, "standard"), (3, 0.5, "step_by_step")]]
    picked = uids(runs[0].val)
    assert len(picked) == 12 and picked == uids(runs[1].val)
    assert set(picked) < set(uids(whole.val)) and file_order(runs[0].val)
    assert picked != uids(whole.val)[:12]  # a draw, not the head of the holdout
    assert runs[0].sources["val"].endswith(", a fixed random subset of 12 of 30 (seed 0)")
    # train and test do not move
    assert uids(runs[0].train) == uids(whole.train) and uids(runs[0].test) == uids(whole.test)
    # another holdout seed, another subset
    assert uids(build_splits(svamp, release.root, holdout_seed=1, val_subset=12).val) != picked


def test_val_subset_draws_apart_from_test_subset(release) -> None:
    release.svamp("train", 300)
    release.svamp("test", 30)
    svamp = get_benchmark("svamp")
    test_only = build_splits(svamp, release.root, test_subset=10)
    both = build_splits(svamp, release.root, test_subset=10, val_subset=10)
    assert uids(both.test) == uids(test_only.test) and both.sources["test"] == test_only.sources["test"]
    # the two draws are not the same permutation of the same count (val has 30 rows, test 30)
    val_positions = [uids(test_only.val).index(u) for u in uids(both.val)]
    test_positions = [int(u.rsplit("/", 1)[1]) for u in uids(both.test)]
    assert val_positions != test_positions


def test_val_subset_of_all_or_none_keeps_the_whole_val(release) -> None:
    release.nli("esnli", "train", 40)
    release.nli("esnli", "valid", 15)
    release.nli("esnli", "test", 9)
    esnli = get_benchmark("esnli")
    files = {"val": "valid"}
    whole = build_splits(esnli, release.root, split_files=files)
    for size in (None, 15, 100):
        s = build_splits(esnli, release.root, split_files=files, val_subset=size)
        assert uids(s.val) == uids(whole.val) and s.sources["val"] == "esnli_valid"
    s = build_splits(esnli, release.root, split_files=files, val_subset=5)
    assert len(s.val) == 5 and file_order(s.val) and set(uids(s.val)) < set(uids(whole.val))
    assert s.sources["val"] == "esnli_valid, a fixed random subset of 5 of 15 (seed 0)"


@pytest.mark.parametrize("value", [0, -3, 2.5, "320", True])
def test_val_subset_must_be_a_positive_count(release, value) -> None:
    release.svamp("train", 40)
    release.svamp("test", 5)
    with pytest.raises(ValueError, match="data.val_subset must be a positive number"):
        build_splits(get_benchmark("svamp"), release.root, val_subset=value)
    with pytest.raises(ValueError, match="data.val_subset"):
        DistillDataModule("svamp", release.root, val_subset=value)


def test_val_subset_keys_the_data_cache_only_when_set(release, tmp_path: Path) -> None:
    release.svamp("train", 40)
    release.svamp("test", 5)

    def version(**kwargs) -> str | None:
        return DistillDataModule("svamp", release.root, cache_dir=tmp_path / "cache", **kwargs).data_version

    assert version(val_subset=None) == version()
    assert version(val_subset=2) not in (version(), version(val_subset=3))


# ---------------------------------------------------------------------------- validation_note
def fake_datamodule(val_examples: int, eval_batch_size: int) -> SimpleNamespace:
    return SimpleNamespace(examples=lambda split: [None] * val_examples, eval_batch_size=eval_batch_size)


@pytest.mark.parametrize("limit", [None, 19, 20, 100, 1.0])
def test_no_validation_note_when_every_val_batch_is_read(limit) -> None:
    assert validation_note(fake_datamodule(1200, 64), limit) is None  # 19 batches (the last of 48)


@pytest.mark.parametrize(
    ("limit", "note"),
    [
        (5, "validation on the 320 longest of 1,200 val examples (trainer.limit_val_batches=5): biased toward "
            "long inputs; use data.val_subset=N for a fixed random subset"),
        (18, "validation on the 1,152 longest of 1,200 val examples (trainer.limit_val_batches=18)"),
        (0.5, "validation on the 576 longest of 1,200 val examples (trainer.limit_val_batches=0.5)"),
        (0, "no validation (trainer.limit_val_batches=0)"),
        (0.0, "no validation (trainer.limit_val_batches=0.0)"),
    ],
)
def test_validation_note_names_the_longest_examples_a_limit_keeps(limit, note) -> None:
    assert validation_note(fake_datamodule(1200, 64), limit).startswith(note)


def test_validation_note_on_a_data_module(release) -> None:
    release.svamp("train", 200)
    release.svamp("test", 5)
    dm = DistillDataModule("svamp", release.root, eval_batch_size=8)  # val: 20 examples, 3 batches
    assert validation_note(dm, 3) is None
    assert validation_note(dm, 2).startswith("validation on the 16 longest of 20 val examples")
    subset = DistillDataModule("svamp", release.root, eval_batch_size=8, val_subset=8)  # one batch
    assert validation_note(subset, 1) is None


# ---------------------------------------------------------------------------- the recipes
def compose_train(overrides: list[str]):
    import distill  # noqa: F401  (the resolvers the configs use)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("recipe", ["repro_smollm2", "repro_smollm2_lr", "repro_smollm2_shared"])
def test_recipes_validate_on_a_fixed_random_subset(recipe: str) -> None:
    cfg = compose_train([f"experiment={recipe}", "repro_cell=esnli_f0.125_test2048"])
    assert cfg.data.val_subset == 320 and cfg.trainer.limit_val_batches is None


def test_no_recipe_limits_validation_batches() -> None:
    setting = [str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.yaml")
               if "limit_val_batches:" in p.read_text() and p.parent.name != "trainer"]
    assert setting == []
    assert compose_train([]).data.val_subset is None
