"""distill.aggregate and the results package on synthetic multirun directories: grouping over seeds,
mean ± standard error, paper-style tables, CSV, PNG plots, failed and never-started runs listed, W&B
projects read; the run identity training writes is the one the reader reads back."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from distill import aggregate as agg
from distill.results.identity import FIELDS, read_identity, with_defaults
from distill.results.runs import Run, expected_jobs, read_wandb
from distill.results.tables import configurations, paired_seeds, stat

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(sweep: Path, num: int, overrides: list[str], *, method: str, fraction: float, seed: int,
              acc: float | None, status: str = "ok", model: str = "tiny", label_source: str = "gold",
              rationale_weight: float = 1.0, params: int = 4_000_000, results: bool = True) -> Path:
    run = sweep / str(num)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}, "overrides": {"task": overrides}}}))
    config = {"data": {"benchmark": {"name": "svamp"}, "fraction": fraction, "label_source": label_source},
              "model": {"short_name": model}, "method": {"name": method, "rationale_weight": rationale_weight, "alpha": None},
              "seed": seed}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if results:
        body = {"status": status,
                "config": {"benchmark": "svamp", "method": method, "model": model, "fraction": fraction,
                           "label_source": label_source, "rationale_weight": rationale_weight, "alpha": None,
                           "seed": seed, "global_batch_size": 8, "max_steps": 4},
                "metrics": {} if acc is None else {"test/acc": acc, "val/acc_best": acc / 2, "train/loss": 1.0},
                "num_parameters": params}
        if status != "ok":
            body["error"] = "CUDA out of memory"
        (run / "results.json").write_text(json.dumps(body))
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 2 methods x 2 fractions x 3 seeds sweep (12 jobs) where job 10 failed, job 11 left no
    results.json, and one more job (12, of a 13-job sweep) never made its directory."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    root.mkdir(parents=True)
    task = ["method=standard,step_by_step", "data.fraction=0.5,1.0", "seed=0,1,2", "model=tiny"]
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None,
                    "params": {"data.label_source": "gold,teacher"}},
        "overrides": {"task": task}}}))
    # 2 label sources x 2 methods x 2 fractions x 3 seeds = 24 jobs in all; we write the gold half
    # (jobs 0..11 in Hydra's order: the sweeper's params first, then the command line's)
    accs = {("standard", 0.5): [0.40, 0.50, 0.45], ("standard", 1.0): [0.60, 0.62, 0.64],
            ("step_by_step", 0.5): [0.55, 0.57, 0.53], ("step_by_step", 1.0): [0.70, 0.74, 0.72]}
    num = 0
    for method in ("standard", "step_by_step"):
        for fraction in (0.5, 1.0):
            for seed in (0, 1, 2):
                overrides = ["data.label_source=gold", f"method={method}", f"data.fraction={fraction}", f"seed={seed}", "model=tiny"]
                if (method, fraction, seed) == ("step_by_step", 1.0, 1):
                    write_run(root, num, overrides, method=method, fraction=fraction, seed=seed, acc=None, status="failed")
                elif (method, fraction, seed) == ("step_by_step", 1.0, 2):
                    write_run(root, num, overrides, method=method, fraction=fraction, seed=seed, acc=None, results=False)
                else:
                    write_run(root, num, overrides, method=method, fraction=fraction, seed=seed,
                              acc=accs[(method, fraction)][seed])
                num += 1
    return root


def test_expected_jobs_follow_hydra_order(sweep: Path) -> None:
    jobs = expected_jobs(sweep)
    assert jobs is not None and len(jobs) == 24
    assert jobs[0].split() == ["data.label_source=gold", "method=standard", "data.fraction=0.5", "seed=0", "model=tiny"]
    assert jobs[12].startswith("data.label_source=teacher")


def test_tables_csv_and_plots(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = agg.aggregate([str(sweep)], out)

    # mean ± standard error over seeds (sample sd / sqrt n), in percent
    values = [0.40, 0.50, 0.45]
    se = statistics.stdev(values) / math.sqrt(3)
    md = (out / "results.md").read_text()
    assert f"{statistics.fmean(values) * 100:.2f} ± {se * 100:.2f}" in md
    assert "### svamp · tiny · test/acc (%)" in md
    assert "| method | 50% | 100% |" in md
    assert "standard finetuning" in md and "distilling step-by-step" in md
    # the one surviving seed of step_by_step at 100% is marked n=1, never given a fake error bar
    assert "70.00 (n=1)" in md

    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    row = next(r for r in rows if r["method"] == "standard" and r["fraction"] == "0.5")
    assert int(row["test/acc_n"]) == 3
    assert float(row["test/acc_mean"]) == pytest.approx(0.45)
    assert float(row["test/acc_se"]) == pytest.approx(se)

    # nothing is dropped: a failed status, a missing results.json (unfinished: running or killed), 12 jobs
    # never started (counted in the report, each in runs.csv)
    failed = result["failed"]
    reasons = [r.reason for r in failed]
    assert any("CUDA out of memory" in r for r in reasons)
    assert any(r == "no results.json" for r in reasons)
    assert sum("never made its output directory" in r for r in reasons) == 12
    assert "10 successful run(s), 1 failed, 0 diverged, 1 unfinished, 12 not started (left out" in md
    assert "### Failed and diverged runs" in md and "no results.json" in md
    assert "never made its output directory" not in md
    with (out / "runs.csv").open() as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert (statuses.count("ok"), statuses.count("failed"), statuses.count("unfinished"),
            statuses.count("not started")) == (10, 1, 1, 12)

    plot = out / "accuracy_vs_fraction.png"
    assert plot in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC
    assert not (out / "accuracy_vs_model_size.png").exists()  # one model: no size axis to plot


def test_model_size_plot_uses_parameter_counts(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    num = 0
    for model, params, acc in (("t5_v1_1_small", 77_000_000, 0.5), ("t5_v1_1_base", 248_000_000, 0.6),
                               ("t5_v1_1_large", 783_000_000, 0.7)):
        for method in ("standard", "step_by_step"):
            write_run(root, num, [f"model={model}"], method=method, fraction=1.0, seed=0, acc=acc, model=model, params=params)
            num += 1
    result = agg.aggregate([str(root)], tmp_path / "out")
    assert tmp_path / "out" / "accuracy_vs_model_size.png" in result["plots"]
    md = (tmp_path / "out" / "results.md").read_text()
    # models appear in size order, not alphabetical
    assert md.index("t5_v1_1_small") < md.index("t5_v1_1_base") < md.index("t5_v1_1_large")


def test_lambda_sweep_gets_its_own_lines_and_plot(tmp_path: Path) -> None:
    root = tmp_path / "lambda"
    num = 0
    for weight, acc in ((0.1, 0.5), (0.5, 0.6), (1.0, 0.65), (2.0, 0.55)):
        write_run(root, num, [f"method.rationale_weight={weight}"], method="step_by_step", fraction=1.0, seed=0,
                  acc=acc, rationale_weight=weight)
        num += 1
    result = agg.aggregate([str(root)], tmp_path / "out")
    assert tmp_path / "out" / "accuracy_vs_lambda.png" in result["plots"]
    assert "distilling step-by-step, λ=0.5" in (tmp_path / "out" / "results.md").read_text()


def test_bad_results_json_names_the_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "s", 0, [], method="standard", fraction=1.0, seed=0, acc=0.5)
    (run / "results.json").write_text('{"status": "ok",\n "config": ')
    good = write_run(tmp_path / "s", 1, [], method="standard", fraction=1.0, seed=1, acc=0.5)
    result = agg.aggregate([str(tmp_path / "s")], tmp_path / "out")
    assert [r.source for r in result["runs"] if r.ok] == [str(good)]
    (failed,) = result["failed"]
    assert f"{run / 'results.json'}:2: invalid JSON" in failed.reason


def test_nothing_usable_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "s", 0, [], method="standard", fraction=1.0, seed=0, acc=None, results=False)
    assert agg.main([str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 1
    assert "none of the 1 run(s) succeeded" in capsys.readouterr().err
    assert agg.main([str(tmp_path / "missing" / "dir"), "--out", str(tmp_path / "out")]) == 1


def test_cli_strict_flag(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agg.main([str(sweep), "--out", str(tmp_path / "a")]) == 0
    assert agg.main([str(sweep), "--out", str(tmp_path / "b"), "--strict"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "UNFINISHED" in captured.err and "no results.json" in captured.err
    assert "NOT STARTED" not in captured.err and "1 failed, 0 diverged, 1 unfinished, 12 not started" in captured.out


def test_reads_a_wandb_project_through_the_api() -> None:
    def wb_run(run_id: str, seed: int, acc: float | None, state: str = "finished", flat: bool = False) -> SimpleNamespace:
        config = {"data": {"benchmark": {"name": "cqa"}, "fraction": 0.25, "label_source": "teacher", "batch_size": 64},
                  "model": {"short_name": "t5_v1_1_base"}, "method": {"name": "step_by_step", "rationale_weight": 1.0, "alpha": None},
                  "seed": seed, "trainer": {"max_steps": 10000}}
        if flat:  # as W&B may store a nested config: data/batch_size
            config = pd.json_normalize(config, sep="/").to_dict("records")[0]
        summary = {} if acc is None else {"test/acc": acc, "val/acc_best": acc, "_step": 3}
        return SimpleNamespace(id=run_id, path=["ent", "proj", run_id], config=config, summary=summary, state=state)

    class FakeApi:
        def runs(self, path: str) -> list[SimpleNamespace]:
            assert path == "ent/proj"
            return [wb_run("a", 0, 0.6), wb_run("b", 1, 0.7, flat=True), wb_run("c", 2, None, state="crashed")]

    runs = read_wandb("ent/proj", api=FakeApi())
    assert [r.status for r in runs] == ["ok", "ok", "failed"]
    assert runs[2].reason == "W&B state 'crashed'"
    (group,) = configurations(runs).to_dict("records")
    assert group["method_label"] == "distilling step-by-step (teacher labels)"
    assert (group["max_steps"], group["global_batch_size"]) == (10000, 64)  # nested or flattened
    mean, se, n = stat(group, "test/acc")
    assert (mean, n) == (pytest.approx(0.65), 2) and se == pytest.approx(0.05)


def test_paired_differences_pair_seeds_and_show_the_teacher(tmp_path: Path) -> None:
    """step-by-step minus finetuning seed by seed on each cell (a seed one method lacks is left
    out), mean ± standard error, the teacher's test accuracy beside it; and the bar plot."""
    root = tmp_path / "grid"
    accs = {("svamp", "standard"): [0.40, 0.44, 0.42], ("svamp", "step_by_step"): [0.45, 0.47, 0.50],
            ("cqa", "standard"): [0.60, 0.61, 0.62], ("cqa", "step_by_step"): [0.58, 0.64, None]}
    num = 0
    for (benchmark, method), values in accs.items():
        for seed, acc in enumerate(values):
            if acc is None:
                continue
            run = write_run(root, num, [f"seed={seed}"], method=method, fraction=1.0, seed=seed, acc=acc)
            body = json.loads((run / "results.json").read_text())
            body["config"]["benchmark"] = benchmark
            body["metrics"]["test/teacher_acc"] = {"svamp": 0.74, "cqa": 0.82}[benchmark]
            (run / "results.json").write_text(json.dumps(body))
            num += 1
    result = agg.aggregate([str(root)], tmp_path / "out")
    paired = {row["benchmark"]: row for row in csv.DictReader((tmp_path / "out" / "paired.csv").open())}
    svamp = [0.45 - 0.40, 0.47 - 0.44, 0.50 - 0.42]
    assert float(paired["svamp"]["difference"]) == pytest.approx(statistics.fmean(svamp))
    assert float(paired["svamp"]["difference_se"]) == pytest.approx(statistics.stdev(svamp) / math.sqrt(3))
    assert paired["cqa"]["n"] == "2" and paired["cqa"]["seeds"] == "0 1"  # seed 2 of step-by-step never ran
    assert float(paired["cqa"]["difference"]) == pytest.approx(((0.58 - 0.60) + (0.64 - 0.61)) / 2)
    assert float(paired["cqa"]["baseline"]) == pytest.approx(0.605)  # over the paired seeds only
    md = (tmp_path / "out" / "results.md").read_text()
    table = md[md.index("### Paired differences"):]
    svamp_row = next(line for line in table.splitlines() if "| svamp" in line)
    assert "step-by-step − standard finetuning" in svamp_row and "+5.33 ± 1.45" in svamp_row and "74.00" in svamp_row
    plot = tmp_path / "out" / "accuracy_by_benchmark.png"
    assert plot in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC
    # the differences plot draws each seed's difference: the same pairs the table averages
    seeds = paired_seeds(result["runs"], "test/acc")
    assert sorted(seeds[seeds["benchmark"] == "svamp"]["difference"]) == pytest.approx(sorted(svamp))
    assert sorted(seeds[seeds["benchmark"] == "cqa"]["seed"]) == [0, 1]
    plot = tmp_path / "out" / "paired_differences.png"
    assert plot in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC


def test_pairs_of_different_precisions_are_left_out(tmp_path: Path) -> None:
    """A pair whose two runs trained in different precisions is named in ``excluded`` and left out of
    n, the mean, its standard error, both means and the seeds; a pair of one precision is kept, and a
    run that recorded none pairs as any other."""
    root = tmp_path / "grid"
    # (benchmark, method): per seed (test accuracy, precision or None: not recorded)
    grid = {("svamp", "standard"): [(0.40, "bf16-mixed"), (0.44, "32-true"), (0.42, "32-true")],
            ("svamp", "step_by_step"): [(0.45, "bf16-mixed"), (0.47, "32-true"), (0.60, "bf16-mixed")],
            ("cqa", "standard"): [(0.60, None), (0.61, None)],
            ("cqa", "step_by_step"): [(0.64, "bf16-mixed"), (0.62, None)]}
    num = 0
    for (benchmark, method), seeds in grid.items():
        for seed, (acc, precision) in enumerate(seeds):
            run = write_run(root, num, [f"seed={seed}"], method=method, fraction=1.0, seed=seed, acc=acc)
            body = json.loads((run / "results.json").read_text())
            body["config"]["benchmark"] = benchmark
            if precision is not None:
                body["config"]["precision"] = precision
            (run / "results.json").write_text(json.dumps(body))
            num += 1
    result = agg.aggregate([str(root)], tmp_path / "out")

    seeds = paired_seeds(result["runs"], "test/acc").set_index(["benchmark", "seed"])
    assert list(seeds.loc["svamp", "mixed_precision"]) == [False, False, True]
    assert (seeds.loc[("svamp", 2), "precision"], seeds.loc[("svamp", 2), "precision_base"]) == ("bf16-mixed", "32-true")
    assert not seeds.loc["cqa", "mixed_precision"].any()  # an unrecorded precision is not a mismatch

    paired = {row["benchmark"]: row for row in csv.DictReader((tmp_path / "out" / "paired.csv").open())}
    svamp = [0.45 - 0.40, 0.47 - 0.44]  # seed 2 (+0.18) mixes precisions
    assert paired["svamp"]["n"] == "2" and paired["svamp"]["seeds"] == "0 1"
    assert float(paired["svamp"]["difference"]) == pytest.approx(statistics.fmean(svamp))
    assert float(paired["svamp"]["difference_se"]) == pytest.approx(statistics.stdev(svamp) / math.sqrt(2))
    assert float(paired["svamp"]["baseline"]) == pytest.approx(0.42) and float(paired["svamp"]["method"]) == pytest.approx(0.46)
    assert paired["svamp"]["excluded"] == "seed 2 (bf16-mixed vs 32-true)"
    assert paired["cqa"]["n"] == "2" and paired["cqa"]["excluded"] == ""
    assert float(paired["cqa"]["difference"]) == pytest.approx(((0.64 - 0.60) + (0.62 - 0.61)) / 2)

    md = (tmp_path / "out" / "results.md").read_text()
    table = md[md.index("### Paired differences"):md.index("### All configurations")]
    svamp_row = next(line for line in table.splitlines() if "| svamp" in line)
    assert "+4.00 ± 1.00" in svamp_row and "seed 2 (bf16-mixed vs 32-true)" in svamp_row
    assert "different precisions is left out of the paired statistics" in table
    plot = tmp_path / "out" / "paired_differences.png"
    assert plot in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC


def test_no_pairs_no_differences_plot(tmp_path: Path) -> None:
    """A sweep of one method pairs nothing: no paired.csv, no differences plot."""
    root = tmp_path / "grid"
    for seed in range(2):
        write_run(root, seed, [f"seed={seed}"], method="standard", fraction=1.0, seed=seed, acc=0.4 + seed / 10)
    result = agg.aggregate([str(root)], tmp_path / "out")
    assert not (tmp_path / "out" / "paired.csv").exists()
    assert not (tmp_path / "out" / "paired_differences.png").exists() and result["plots"] == []


def test_kept_runs_rebuild_the_same_tables(sweep: Path, tmp_path: Path) -> None:
    """--keep-runs copies each run's small files (never a checkpoint); the copy aggregates alike."""
    (sweep / "0" / "checkpoints").mkdir()
    (sweep / "0" / "checkpoints" / "last.ckpt").write_bytes(b"large")
    assert agg.main([str(sweep), "--out", str(tmp_path / "a"), "--keep-runs", str(tmp_path / "kept")]) == 0
    kept = tmp_path / "kept" / sweep.name
    assert (kept / "0" / "results.json").is_file() and (kept / "0" / ".hydra" / "config.yaml").is_file()
    assert not list(kept.rglob("*.ckpt"))
    agg.aggregate([str(kept)], tmp_path / "b")
    table = (tmp_path / "a" / "results.csv").read_text()
    assert table and (tmp_path / "b" / "results.csv").read_text() == table


def test_follow_up_choices_are_groups_of_their_own() -> None:
    """Runs that differ only in data.rationales, data.rationale_filter or single_task's rationale position
    are not pooled; runs recorded before those keys existed made the paper's choices."""
    def run(seed: int, **config) -> Run:
        base = {"benchmark": "svamp", "model": "tiny", "method": "step_by_step", "label_source": "gold",
                "fraction": 1.0, "seed": seed}
        return Run(f"r{seed}{sorted(config.items())}", "ok", {**base, **config}, {"test/acc": 0.5})

    groups = configurations([run(0), run(1, rationales="first", rationale_filter="none"),
                             run(0, rationales="all"), run(0, rationales="all", rationale_filter="teacher_correct"),
                             run(0, method="single_task", rationale_position="after"),
                             run(0, method="single_task"), run(0, label_source="teacher_vote")])
    labels = sorted(groups["method_label"])
    assert len(groups) == 6 and list(groups.loc[groups["method_label"] == "distilling step-by-step", "test/acc_n"]) == [2]
    assert labels == sorted(["distilling step-by-step", "distilling step-by-step (all rationales)",
                             "distilling step-by-step (all rationales, teacher-correct)",
                             "single-task rationale+label (label first)", "single-task rationale+label",
                             "distilling step-by-step (teacher labels) (vote labels)"])


def test_precision_and_training_time_are_reported_not_pooled_on(tmp_path: Path) -> None:
    """Seeds that trained in different precisions (one sweep resumed on another kind of CPU) stay one
    configuration, the table says which seed ran in which; the training time is the mean per seed
    and the sum over runs, read from results.json."""
    root = tmp_path / "mixed"
    for num, (precision, seconds) in enumerate((("bf16-mixed", 600.0), ("32-true", 1200.0), ("32-true", 1800.0))):
        run = write_run(root, num, [f"seed={num}"], method="standard", fraction=1.0, seed=num, acc=0.5)
        body = json.loads((run / "results.json").read_text())
        body["config"]["precision"], body["train_seconds"] = precision, seconds
        (run / "results.json").write_text(json.dumps(body))
    result = agg.aggregate([str(root)], tmp_path / "out")
    (group,) = result["groups"].to_dict("records")
    assert group["precision"] == "32-true (1 2) bf16-mixed (0)" and group["train_seconds"] == pytest.approx(1200.0)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Training: 1.0 h in all" in md
    assert "| 50.00 ± 0.00 | 25.00 ± 0.00 |  |  | 32-true (1 2) bf16-mixed (0) | 20.0 |" in md  # no steps recorded
    with (tmp_path / "out" / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["precision"], float(r["train_seconds"])) for r in rows] == [("bf16-mixed", 600.0), ("32-true", 1200.0), ("32-true", 1800.0)]


def test_learning_rates_are_configurations_of_their_own(tmp_path: Path) -> None:
    """A learning-rate sweep is not pooled over its rates; a results.json from before the rate was
    recorded takes it from the run's .hydra/config.yaml."""
    root = tmp_path / "lr"
    for num, (lr, acc) in enumerate(((3e-5, 0.30), (1e-4, 0.40))):
        run = write_run(root, num, [f"optimizer.lr={lr}"], method="standard", fraction=1.0, seed=0, acc=acc)
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "optimizer": {"lr": lr}}))
    result = agg.aggregate([str(root)], tmp_path / "out")
    assert sorted(result["groups"]["lr"]) == [3e-5, 1e-4]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| standard finetuning, lr=3e-05 | 30.00 (n=1) |" in md and "| standard finetuning, lr=0.0001 | 40.00 (n=1) |" in md


def test_expected_jobs_expand_as_the_basic_sweeper(tmp_path: Path) -> None:
    """The sweeper's params then the command line's, a key given twice keeps its first place and its
    last value, a range expands; an interval sweep (the basic sweeper refuses it) or another sweeper: None."""
    def sweep(params: dict, task: list[str], target: str = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"):
        (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
            "sweeper": {"_target_": target, "params": params}, "overrides": {"task": task}}}, sort_keys=False))
        return expected_jobs(tmp_path)

    assert sweep({"seed": "0,1", "data.fraction": "0.5,1.0"}, ["model=tiny", "data.fraction=0.25"]) == [
        "seed=0 data.fraction=0.25 model=tiny", "seed=1 data.fraction=0.25 model=tiny"]
    assert sweep({}, ["seed=range(0,3)", "method=choice(standard,step_by_step)"]) == [
        "seed=0 method=standard", "seed=0 method=step_by_step", "seed=1 method=standard",
        "seed=1 method=step_by_step", "seed=2 method=standard", "seed=2 method=step_by_step"]
    assert sweep({}, ["optimizer.lr=interval(0,1)"]) is None
    assert sweep({"seed": "0,1"}, [], target="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper") is None
    assert expected_jobs(tmp_path / "nowhere") is None


def test_read_identity_nested_flattened_unresolved() -> None:
    nested = {"data": {"benchmark": {"_target_": "my.Bench"}, "fraction": 0.5, "label_source": "${oc.env:LS}"},
              "method": {"name": "standard"}, "seed": 3}
    identity = read_identity(nested)
    assert list(identity) == list(FIELDS)
    # a benchmark without a name is named by its class; an unresolved interpolation reads as None
    assert (identity["benchmark"], identity["fraction"], identity["label_source"], identity["seed"]) == ("my.Bench", 0.5, None, 3)
    assert read_identity({"data/fraction": 0.25, "optimizer/lr": 1e-4})["fraction"] == 0.25
    filled = with_defaults(identity)
    assert (filled["shared_input"], filled["rationales"], filled["rationale_filter"], filled["rationale_position"]) == (
        False, "first", "none", "before")
    assert filled["alpha"] is None and filled["lr"] is None  # no default: the record says it was not given


@pytest.mark.parametrize("overrides", [[], ["method=single_task", "method.rationale_position=after"],
                                       ["method=standard", "data.label_source=teacher", "optimizer.lr=1e-4"],
                                       ["method.alpha=0.5", "method.shared_input=true", "data.rationales=all"],
                                       ["model=tiny_causal"]])  # shared_input: ${model.decoder_only}, true
def test_results_json_records_the_identity_the_reader_reads(overrides: list[str], tmp_path: Path) -> None:
    """Training's results.json config holds the run identity as the results package reads it from the
    run's unresolved .hydra/config.yaml; a results.json lacking a field takes it from there."""
    from omegaconf import OmegaConf

    from train_utils import compose_train
    from distill.results.runs import read_run
    from distill.data.batching import BatchPlan
    from distill.training import run_config_summary

    cfg = compose_train(overrides, tmp_path)
    plan = BatchPlan.of(cfg.data.batch_size, 1, cfg.data.micro_batch_size)
    summary = run_config_summary(cfg, SimpleNamespace(world_size=1, precision="32-true", lightning_module=None), plan)
    unresolved = OmegaConf.to_container(cfg, resolve=False)
    assert {k: summary[k] for k in FIELDS} == with_defaults(read_identity(unresolved))
    assert summary["world_size"] == 1 and summary["precision"] == "32-true"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    recorded = {k: v for k, v in summary.items() if k != "lr"}
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok", "config": recorded, "metrics": {"test/acc": 0.5}}))
    run = read_run(tmp_path)
    assert run.ok and {k: run.config[k] for k in FIELDS} == {k: summary[k] for k in FIELDS}


def test_the_committed_protocol_tables_rebuild_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """experiments/repro_smollm2/protocol/ was written by distill.aggregate from its kept runs: the
    same command writes the same results.md, results.csv and runs.csv."""
    protocol = Path(__file__).resolve().parents[1] / "experiments" / "repro_smollm2" / "protocol"
    monkeypatch.chdir(protocol.parents[2])  # the report names its sources relative to the repository
    assert agg.main([str(protocol.relative_to(protocol.parents[2]) / "runs"), "--out", str(tmp_path),
                     "--metric", "val/acc_best"]) == 0
    for name in ("results.md", "results.csv", "runs.csv"):
        assert (tmp_path / name).read_bytes() == (protocol / name).read_bytes(), name


def test_paired_statistics_match_scipys_paired_t_test_and_the_pooled_estimate_is_inverse_variance(tmp_path: Path) -> None:
    """Per cell: the 95% interval and p-value of scipy's paired t-test, and the smallest difference
    detectable with 80% power; across cells: the fixed-effect estimate and Cochran's Q by hand."""
    from scipy import stats as sp

    root = tmp_path / "grid"
    accs = {("svamp", "standard"): [0.40, 0.44, 0.42, 0.41], ("svamp", "step_by_step"): [0.45, 0.47, 0.50, 0.44],
            ("cqa", "standard"): [0.60, 0.61, 0.62, 0.58], ("cqa", "step_by_step"): [0.58, 0.64, 0.61, 0.60]}
    num = 0
    for (benchmark, method), values in accs.items():
        for seed, acc in enumerate(values):
            run = write_run(root, num, [f"seed={seed}"], method=method, fraction=1.0, seed=seed, acc=acc)
            body = json.loads((run / "results.json").read_text())
            body["config"]["benchmark"] = benchmark
            (run / "results.json").write_text(json.dumps(body))
            num += 1
    agg.aggregate([str(root)], tmp_path / "out")
    paired = {row["benchmark"]: row for row in csv.DictReader((tmp_path / "out" / "paired.csv").open())}
    weights, means = [], []
    for benchmark in ("svamp", "cqa"):
        method, base = accs[(benchmark, "step_by_step")], accs[(benchmark, "standard")]
        test = sp.ttest_rel(method, base)
        interval = test.confidence_interval(0.95)
        row = paired[benchmark]
        assert float(row["p_value"]) == pytest.approx(test.pvalue)
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((interval.low, interval.high))
        se = float(row["difference_se"])
        assert float(row["detectable"]) == pytest.approx((sp.t.ppf(0.975, 3) + sp.t.ppf(0.8, 3)) * se)
        weights.append(1 / se**2)
        means.append(float(row["difference"]))
    fixed = sum(w * d for w, d in zip(weights, means)) / sum(weights)
    q = sum(w * (d - fixed) ** 2 for w, d in zip(weights, means))
    md = (tmp_path / "out" / "results.md").read_text()
    pooled_row = next(line for line in md[md.index("### Pooled across cells"):].splitlines() if "| step-by-step" in line)
    assert f"{fixed * 100:+.2f} ± {math.sqrt(1 / sum(weights)) * 100:.2f}" in pooled_row
    assert f"{q:.1f} (p {sp.chi2.sf(q, 1):.3f})" in pooled_row


def test_steps_trained_best_step_and_learning_curves(tmp_path: Path) -> None:
    """A run's steps come from results.json, its curve from its metrics CSVs (a resumed run's parts
    together; the CSV counts steps from 0), its best step is the first of its best validation; the
    tables show both and the learning-curve plot is drawn."""
    root = tmp_path / "grid"
    curves = {"standard": [(49, 0.2), (99, 0.4), (149, 0.4), (199, 0.3)],
              "step_by_step": [(49, 0.3), (99, 0.35), (149, 0.5), (199, 0.45)]}
    for num, (method, curve) in enumerate(curves.items()):
        run = write_run(root, num, [f"method={method}"], method=method, fraction=1.0, seed=0, acc=0.5)
        body = json.loads((run / "results.json").read_text())
        body["global_step"] = 200
        (run / "results.json").write_text(json.dumps(body))
        first, second = run / "csv" / "version_0", run / "csv" / "version_1"
        for part, points in ((first, curve[:2]), (second, curve[2:])):
            part.mkdir(parents=True)
            rows = ["step,train/loss,val/acc"] + [f"{s},,{a}" for s, a in points] + [f"{points[0][0] - 1},1.0,"]
            (part / "metrics.csv").write_text("\n".join(rows) + "\n")
    result = agg.aggregate([str(root)], tmp_path / "out")
    runs = {r.config["method"]: r for r in result["runs"]}
    assert runs["standard"].curve == ((50, 0.2), (100, 0.4), (150, 0.4), (200, 0.3))
    assert (runs["standard"].best_step, runs["step_by_step"].best_step) == (100, 150)
    assert runs["standard"].steps == 200
    paired = next(csv.DictReader((tmp_path / "out" / "paired.csv").open()))
    assert (float(paired["best_step_base"]), float(paired["best_step"]), float(paired["steps"])) == (100, 150, 200)
    plot = tmp_path / "out" / "learning_curves.png"
    assert plot in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC
