"""The paper recipes (conf/experiment/*.yaml) are valid sweeps: each composes, every job of its
sweep composes with the SLURM launcher, and experiments/README.md states their sizes truly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import distill  # noqa: F401  (the resolvers the configs use)

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def sweep_jobs(name: str, *overrides: str) -> list[list[str]]:
    """The jobs of ``python train.py -m experiment=NAME *overrides``: as BasicSweeper.sweep, the
    command-line values come after the recipe's sweep and replace a list of the same key."""
    cfg = compose_train([f"experiment={name}", *overrides])
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + list(overrides)
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return [job for batch in batches for job in batch]


def test_there_are_recipes() -> None:
    assert {"data_fraction", "model_size", "lambda_sweep", "label_source", "single_vs_multi_task", "seeds",
            "causal_headline", "example"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_and_every_job_is_valid(name: str) -> None:
    text = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"experiment={name}" in text, "the recipe's header shows its command"
    cfg = compose_train([f"experiment={name}", "hydra/launcher=slurm"])
    assert cfg.experiment_name
    jobs = sweep_jobs(name)
    assert len(jobs) >= 2
    # the first and the last job of the sweep compose, so no sweep key or value is misspelt
    for job in (jobs[0], jobs[-1]):
        job_cfg = compose_train([f"experiment={name}", "hydra/launcher=slurm", *job])
        for override in job:
            key, value = override.split("=", 1)
            if key in job_cfg.hydra.runtime.choices:
                assert job_cfg.hydra.runtime.choices[key] == value, f"{name}: {override} not applied"
                continue  # a group choice
            node = job_cfg
            for part in key.split("."):
                node = node[part]
            assert str(node) == value or float(node) == float(value), f"{name}: {override} not applied"
        assert job_cfg.hydra.launcher.tasks_per_node >= 1


def test_paper_recipes_use_the_paper_setup() -> None:
    paper = [n for n in RECIPES if "- _paper\n" in (REPO / "conf" / "experiment" / f"{n}.yaml").read_text()]
    assert len(paper) >= 12
    for name in paper:
        cfg = compose_train([f"experiment={name}"])
        assert cfg.data.batch_size == 64 and cfg.optimizer.lr == 5e-5
        assert cfg.trainer.max_steps == 10000 and cfg.trainer.val_check_interval == 250
        if name.startswith("causal_"):  # the same setup with a decoder-only student
            assert cfg.model.kind == "causal" and cfg.model.name_or_path
        else:
            assert cfg.model.short_name.startswith("t5_v1_1_")
    assert compose_train(["experiment=model_size_xxl"]).trainer.strategy._target_.endswith("FSDPStrategy")


def test_readme_run_counts_match_the_sweeps() -> None:
    readme = (REPO / "experiments" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|[^|]*\| (\d+)(?: each)? \|$", readme, flags=re.M)
    assert rows, "the recipe table of experiments/README.md was not found"
    named = set()
    for pattern, runs in rows:
        match = re.fullmatch(r"(.*)\{(.*)\}(.*)", pattern)
        names = [f"{match[1]}{part}{match[3]}" for part in match[2].split(",")] if match else [pattern]
        for name in names:
            assert name in RECIPES, f"README names {name}, which is not in conf/experiment/"
            assert len(sweep_jobs(name)) == int(runs), f"README says {runs} runs for {name}"
            named.add(name)
    assert named == set(RECIPES) - {"example"}, "every paper recipe is in the README table"


def test_data_fraction_sweeps_the_benchmarks_or_the_one_named() -> None:
    """experiment=data_fraction: both methods x 5 fractions x 3 seeds on the four benchmarks, or on
    the one of data=B; gold labels (vs standard finetuning) unless data.label_source=teacher (vs
    standard distillation)."""
    fractions, methods, seeds = {0.125, 0.25, 0.5, 0.75, 1.0}, {"standard", "step_by_step"}, {0, 1, 2}
    for overrides, benchmarks, labels in (
            ((), {"esnli", "anli1", "cqa", "svamp"}, "gold"),
            (("data=svamp",), {"svamp"}, "gold"),
            (("data=cqa", "data.label_source=teacher"), {"cqa"}, "teacher"),
            (("data.label_source=teacher",), {"esnli", "anli1", "cqa", "svamp"}, "teacher")):
        jobs = sweep_jobs("data_fraction", *overrides)
        cells = set()
        for job in jobs:
            cfg = compose_train(["experiment=data_fraction", *job])
            assert cfg.experiment_name == "data_fraction" and cfg.data.label_source == labels, overrides
            assert cfg.model.short_name == "t5_v1_1_base"
            cells.add((cfg.data.benchmark.name, cfg.method.name, cfg.data.fraction, cfg.seed))
        assert len(jobs) == len(cells) == len(benchmarks) * 2 * 5 * 3, overrides
        assert cells == {(b, m, f, s) for b in benchmarks for m in methods for f in fractions for s in seeds}


def test_committed_example_is_complete() -> None:
    example = REPO / "experiments" / "example"
    md = (example / "results.md").read_text()
    assert "| method | 25% | 50% | 100% |" in md and "standard finetuning" in md and "distilling step-by-step" in md
    assert (example / "accuracy_vs_fraction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (example / "results.csv").read_text().count("\n") >= 7  # header + 6 configurations


def test_repro_minilm_grid_is_the_core_grid_and_every_job_composes() -> None:
    """experiment=repro_minilm: e-SNLI and CQA at 12.5% and 100%, ANLI and SVAMP at 100%, standard
    finetuning vs step-by-step on gold labels, 2 seeds; every job composes to what it says."""
    jobs = sweep_jobs("repro_minilm")
    assert len(jobs) == 24
    cells = set()
    for job in jobs:
        cfg = compose_train(["experiment=repro_minilm", *job])
        benchmark, fraction = cfg.data.benchmark.name, cfg.data.fraction
        cells.add((benchmark, fraction))
        assert cfg.model.short_name == "minilm" and cfg.data.label_source == "gold" and cfg.data.teacher == "llm"
        assert cfg.method.name in ("standard", "step_by_step") and cfg.seed in (0, 1)
        # the same budget, schedule and learning rate for both methods
        assert (cfg.trainer.max_steps, cfg.data.batch_size, cfg.optimizer.lr, cfg.scheduler.warmup_ratio) == (
            600, 64, 3e-4, 0.05)
        # the shared copy has no e-SNLI/ANLI train file: valid is the pool, val its holdout, test untouched
        expected_train = "valid" if benchmark in ("esnli", "anli1") else "train"
        assert cfg.data.split_files.train == expected_train and cfg.data.split_files.val is None
        assert cfg.data.split_files.test == "test"
    assert cells == {("esnli", 0.125), ("esnli", 1.0), ("cqa", 0.125), ("cqa", 1.0), ("anli1", 1.0), ("svamp", 1.0)}


def test_repro_smollm2_grid_is_the_core_grid_and_every_job_composes() -> None:
    """experiment=repro_smollm2: SVAMP, CQA 12.5%, ANLI, e-SNLI 12.5% (tested on a fixed 2,048),
    standard finetuning vs step-by-step on gold labels and PaLM rationales, 3 seeds, one protocol."""
    jobs = sweep_jobs("repro_smollm2")
    assert len(jobs) == 24
    cells, protocols = set(), set()
    for job in jobs:
        cfg = compose_train(["experiment=repro_smollm2", *job])
        benchmark = cfg.data.benchmark.name
        cells.add((benchmark, cfg.data.fraction, cfg.data.test_subset))
        assert cfg.model.short_name == "smollm2" and cfg.data.label_source == "gold" and cfg.data.teacher == "llm"
        assert cfg.method.name in ("standard", "step_by_step") and cfg.seed in (0, 1, 2)
        # validation on a fixed random 320 of val (never limit_val_batches: the longest batches)
        assert cfg.data.val_subset == 320 and cfg.trainer.limit_val_batches is None
        assert cfg.trainer.val_check_interval == 25
        assert cfg.trainer.precision == "bf16-mixed"  # one precision for every job, pinned
        protocols.add((cfg.trainer.max_steps, cfg.data.batch_size, cfg.optimizer.lr, cfg.scheduler.warmup_ratio,
                       cfg.data.max_input_length, cfg.data.max_rationale_length))
        expected_train = "valid" if benchmark in ("esnli", "anli1") else "train"
        assert cfg.data.split_files.train == expected_train and cfg.data.split_files.val is None
        assert cfg.data.split_files.test == "test"
    # the same steps, batch, schedule and lengths for both methods: the protocol chosen on validation
    assert protocols == {(100, 16, 3.0e-4, 0.0, 256, 128)}
    assert cells == {("svamp", 1.0, None), ("cqa", 0.125, None), ("anli1", 1.0, None), ("esnli", 0.125, 2048)}
    lr_jobs = sweep_jobs("repro_smollm2_lr")
    assert len(lr_jobs) == 8
    for job in lr_jobs:
        cfg = compose_train(["experiment=repro_smollm2_lr", *job])
        assert cfg.method.name == "standard" and cfg.model.short_name == "smollm2"
    # the shared-input layout on two cells, the grid's own protocol
    shared_jobs = sweep_jobs("repro_smollm2_shared")
    assert len(shared_jobs) == 6
    for job in shared_jobs:
        cfg = compose_train(["experiment=repro_smollm2_shared", *job])
        assert cfg.method.name == "step_by_step" and cfg.method.shared_input is True
        assert cfg.data.benchmark.name in ("svamp", "cqa")
        assert {(cfg.trainer.max_steps, cfg.data.batch_size, cfg.optimizer.lr, cfg.scheduler.warmup_ratio,
                 cfg.data.max_input_length, cfg.data.max_rationale_length)} == protocols


def test_follow_up_recipes_set_what_they_ablate() -> None:
    """The beyond-the-paper recipes: the k-sample teacher is the user's to name (the data layer refuses
    a one-sample teacher for them); the ablated setting reaches the data module (single_task's
    rationale position through the data config too)."""
    for name in ("diverse_rationales", "self_consistency"):
        assert "data.teacher=T" in (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
    positions = set()
    for job in sweep_jobs("rationale_position"):
        cfg = compose_train(["experiment=rationale_position", *job])
        assert cfg.method.name == "single_task" and cfg.data.rationale_position == cfg.method.rationale_position
        positions.add(cfg.data.rationale_position)
    assert positions == {"before", "after"}
    filters = {compose_train(["experiment=rationale_filter", *job]).data.rationale_filter
               for job in sweep_jobs("rationale_filter")}
    assert filters == {"none", "teacher_correct"}
    assert compose_train(["experiment=rationale_filter"]).data.rationales == "first"  # the release's, as it stands
    assert compose_train(["method=step_by_step"]).data.rationale_position == "before"  # no such choice there


def test_every_recipe_pins_its_precision() -> None:
    """No recipe leaves its precision to ``auto`` (which follows the machine): every job of a sweep
    computes in the precision its recipe names, whatever machine it lands on."""
    for name in RECIPES:
        from omegaconf import OmegaConf

        precision = OmegaConf.to_container(compose_train([f"experiment={name}"]).trainer, resolve=False)["precision"]
        assert precision in ("32-true", "bf16-mixed"), (name, precision)  # not auto, not a resolver of the machine
