"""Bad input ends in a DataError that names the file (and line), never a silent drop."""

from __future__ import annotations

import json

import pytest

from distill.benchmarks import get_benchmark
from distill.benchmarks.base import DataError
from distill.benchmarks.io import read_jsonl, read_teacher_completions
from distill.data.splits import build_splits


def test_missing_train_file_names_the_path_and_the_override(release):
    release.nli("esnli", "valid", 10)
    release.nli("esnli", "test", 10)
    with pytest.raises(DataError) as err:
        build_splits(get_benchmark("esnli"), release.root, split_files={"val": "valid"})
    message = str(err.value)
    assert str(release.root / "esnli" / "esnli_train.json") in message
    assert "data.split_files.train=valid" in message


def test_missing_benchmark_directory_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        build_splits(get_benchmark("cqa"), tmp_path)
    assert "cqa_train.json" in str(err.value) and "python -m distill.data download" in str(err.value)


def test_malformed_json_line_names_file_and_line(release):
    good = json.dumps({"input": "q", "label": "(1 + 1)"})
    path = release.records("svamp", "train", [good, good, '{"input": "q", "label": ', good])
    with pytest.raises(DataError, match=rf"{path}:3: malformed JSON"):
        read_jsonl(path)
    path = release.records("svamp", "train", [good, "[1, 2]"])
    with pytest.raises(DataError, match=rf"{path}:2: expected a JSON object"):
        read_jsonl(path)


def test_shard_count_mismatch_names_shards_and_counts(release):
    release.svamp("train", 10)
    release.shards("svamp", "train", ["x. The answer is (1)."] * 4, per_shard=2)  # 2 shards of 2, not 10
    with pytest.raises(DataError) as err:
        build_splits(get_benchmark("svamp"), release.root)
    message = str(err.value)
    assert "train_CoT_0.json (2)" in message and "train_CoT_1.json (2)" in message
    assert "4 completions" in message and "10 rows" in message and "svamp_train.json" in message


def test_shard_gap_and_malformed_shard(release):
    release.svamp("train", 4)
    directory = release.root / "svamp" / "llm"
    for p in directory.glob("*.json"):
        p.unlink()
    (directory / "train_CoT_0.json").write_text(json.dumps(["a"] * 2))
    (directory / "train_CoT_2.json").write_text(json.dumps(["a"] * 2))
    with pytest.raises(DataError, match=r"train_CoT_1\.json"):
        read_teacher_completions(release.root, "svamp", "llm", "train", 4)
    (directory / "train_CoT_2.json").unlink()
    (directory / "train_CoT_0.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="train_CoT_0.json: expected a JSON array"):
        read_teacher_completions(release.root, "svamp", "llm", "train", 4)
    (directory / "train_CoT_0.json").write_text(json.dumps(["ok", 3]))
    with pytest.raises(DataError, match="item 1"):
        read_teacher_completions(release.root, "svamp", "llm", "train", 2)
    for p in directory.glob("*.json"):
        p.unlink()
    with pytest.raises(DataError, match="no teacher completions"):
        read_teacher_completions(release.root, "svamp", "llm", "train", 4)


@pytest.mark.parametrize(
    "name, record, field_error",
    [
        ("esnli", {"premise": "p", "hypothesis": "h", "label": 3}, "label 3 is not one of"),
        ("anli1", {"uid": "u", "premise": "p", "hypothesis": "h", "label": "maybe", "reason": ""}, "not one of"),
        ("cqa", {"id": "i", "question": "q", "choices": ["a", "b", "c", "d", "e"], "answer": "f"}, "not one of the item's choices"),
        ("svamp", {"input": "q", "label": "(x + 1)"}, "not an arithmetic expression"),
        ("svamp", {"input": "q"}, "missing field 'label'"),
    ],
)
def test_label_outside_the_label_space_names_file_and_line(release, name, record, field_error):
    if name in ("esnli", "anli1"):
        records, _ = release.nli(name, "train", 6)
    elif name == "cqa":
        records, _ = release.cqa("train", 6)
    else:
        records, _ = release.svamp("train", 6)
    path = release.records(name, "train", records[:4] + [record] + records[5:])
    with pytest.raises(DataError) as err:
        build_splits(get_benchmark(name), release.root, teacher=None)
    assert f"{path}:5: " in str(err.value) and field_error in str(err.value)


def test_jsonl_label_space_violation_names_file_and_line(release):
    path = release.records("mytask", "train", [{"x": "a", "y": "yes"}, {"x": "b", "y": "perhaps"}])
    bench = get_benchmark("jsonl", name="mytask", input_fields=["x"], label_field="y", label_space=["yes", "no"])
    with pytest.raises(DataError, match=rf"{path}:2: label 'perhaps' is outside the label space"):
        build_splits(bench, release.root, teacher=None)


def test_shards_of_the_wrong_sizes_are_refused_even_with_the_right_total(release):
    """Shard 1 one short and the last one long: the total is right, every completion from shard 1
    on belongs to the row before. The layout's shards are all full but the last."""
    _, completions = release.cqa("train", 120, per_shard=50)  # 50 + 50 + 20
    directory = release.root / "cqa" / "llm"
    for i, chunk in enumerate([completions[:50], completions[50:99], completions[99:]]):  # 50 + 49 + 21
        (directory / f"train_CoT_{i}.json").write_text(json.dumps(chunk))
    with pytest.raises(DataError) as err:
        read_teacher_completions(release.root, "cqa", "llm", "train", 120)
    message = str(err.value)
    assert "train_CoT_0.json (50), train_CoT_1.json (49), train_CoT_2.json (21)" in message
    assert str(directory) in message and "wrong row" in message
    # full shards and a shorter last one are the layout
    (directory / "train_CoT_1.json").write_text(json.dumps(completions[50:100]))
    (directory / "train_CoT_2.json").write_text(json.dumps(completions[100:]))
    assert read_teacher_completions(release.root, "cqa", "llm", "train", 120)[0] == completions


def _shift(paths, by: int = 1) -> None:
    """Rotate the completions of one-shard files by ``by`` rows: the count stays, the rows move."""
    for path in paths:
        texts = json.loads(path.read_text())
        path.write_text(json.dumps(texts[by:] + texts[:by]))


@pytest.mark.parametrize("name", ["svamp", "cqa", "anli1"])
def test_teacher_labels_at_chance_against_gold_mean_misaligned_shards(release, name):
    write = {"svamp": release.svamp, "cqa": release.cqa, "anli1": lambda split, n: release.nli("anli1", split, n)}[name]
    write("train", 90)
    write("test", 12)
    _shift((release.root / name / "llm").glob("train_CoT_*.json"))
    with pytest.raises(DataError) as err:
        build_splits(get_benchmark(name), release.root, split_files={"val": None})
    message = str(err.value)
    assert "train_CoT_0.json" in message and "chance" in message and "data.on_misaligned_teacher=warn" in message
    # by option a warning, kept with the file's figures (the summary shows it)
    s = build_splits(get_benchmark(name), release.root, on_misaligned_teacher="warn")
    assert any("chance" in w for w in s.files["train"].warnings)


def test_small_or_unparsed_files_are_not_judged_for_alignment(release):
    release.svamp("train", 40)  # under 50 rows: too few to judge
    release.svamp("test", 12)
    _shift((release.root / "svamp" / "llm").glob("train_CoT_*.json"))
    assert build_splits(get_benchmark("svamp"), release.root).files["train"].warnings == []
    # most completions unparsed: the parse failures tell the story, not alignment
    release.svamp("train", 90, failures=list(range(60)))
    _shift((release.root / "svamp" / "llm").glob("train_CoT_*.json"))
    assert build_splits(get_benchmark("svamp"), release.root).files["train"].warnings == []


def test_a_jsonl_field_that_no_record_has_is_an_error(release):
    path = release.records("mytask", "train", [{"x": f"q{i}", "y": "yes", "explanation": "because"} for i in range(10)])
    release.records("mytask", "test", [{"x": "q", "y": "no"}])
    for setting in ("rationale_field", "teacher_label_field"):
        bench = get_benchmark("jsonl", name="mytask", input_fields=["x"], label_field="y", **{setting: "explnation"})
        with pytest.raises(DataError) as err:
            build_splits(bench, release.root, teacher=None)
        message = str(err.value)
        assert str(path) in message and f"data.benchmark.{setting}='explnation'" in message
        assert "explanation, x, y" in message
    # the test file need not carry rationales
    bench = get_benchmark("jsonl", name="mytask", input_fields=["x"], label_field="y", rationale_field="explanation")
    assert all(e.rationale == "because" for e in build_splits(bench, release.root, teacher=None).train)
