"""distill.methods: the one table of methods, and the data module, splits, encoder and model asking it
(a method made in code is honoured without any of them knowing its name)."""

from __future__ import annotations

import pytest

from distill.benchmarks import get_benchmark
from distill.benchmarks.base import DataError
from distill.data import DistillDataModule
from distill.data.encoding import target_text
from distill.data.splits import build_splits
from distill.data.targets import single_task_target
from distill.methods import METHODS, Method, get_method

TINY = {"kind": "tiny", "short_name": "tiny"}


def test_the_table_of_methods():
    assert tuple(METHODS) == ("standard", "step_by_step", "single_task")
    assert [(m.tasks, m.needs_rationales, m.label_budget(64, 256)) for m in METHODS.values()] == [
        (("label",), False, 64),
        (("label", "rationale"), True, 64),
        (("label",), True, 320),  # single_task: the rationale and the label in one target
    ]
    assert get_method("single_task") is METHODS["single_task"]
    assert get_method(METHODS["standard"]) is METHODS["standard"]
    for bad in ("both", None):
        with pytest.raises(ValueError, match="expected one of"):
            get_method(bad)


@pytest.fixture
def svamp_files(release):
    release.svamp("train", 40)
    release.svamp("test", 10)
    return release.root


def _datamodule(root, tokenizer, method, **kwargs):
    dm = DistillDataModule("svamp", root, tokenizer=tokenizer, targets=method, batch_size=8, cache_dir=None, **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("name", list(METHODS))
def test_the_data_module_lays_batches_out_as_the_method_says(svamp_files, tokenizer, name):
    method = METHODS[name]
    dm = _datamodule(svamp_files, tokenizer, name, shared_input=True, max_target_length=8, max_rationale_length=16)
    assert dm.method is method and dm.targets == name
    assert dm.shared_input == method.rationale_task  # only two tasks have an x to share
    assert bool(dm.task_prefixes["label"]) == method.rationale_task
    batch = next(iter(dm.train_dataloader()))
    assert ("rationale" in batch) == method.rationale_task
    example = dm.examples("train")[0]
    expected = single_task_target(example.rationale, example.gold) if method.label_holds_rationale else example.gold
    assert target_text(example, method) == expected
    longest = max(len(ids) for ids in dm.dataset("train")["label_ids"])
    assert longest <= method.label_budget(8, 16) and (longest > 8) == method.label_holds_rationale


def test_a_method_made_in_code_is_asked_not_named(svamp_files, tokenizer):
    """A method the table does not hold reaches every consumer as its fields say: here a label target
    holding the rationale, learnt from the teacher's rationales, one task."""
    custom = Method("rationale_then_label", needs_rationales=True, label_holds_rationale=True)
    dm = _datamodule(svamp_files, tokenizer, custom)
    assert dm.targets == "rationale_then_label" and dm.task_prefixes == {"label": "", "rationale": ""}
    example = next(e for e in dm.examples("train") if e.rationale)
    assert target_text(example, custom) == single_task_target(example.rationale, example.gold)
    assert "rationale" not in next(iter(dm.train_dataloader()))
    with pytest.raises(DataError, match="method rationale_then_label trains on the teacher's rationales"):
        build_splits(get_benchmark("svamp"), svamp_files, teacher="nobody", targets=custom)


@pytest.mark.parametrize("name", list(METHODS))
def test_the_train_file_needs_the_teacher_where_the_method_learns_rationales(svamp_files, name):
    method = METHODS[name]
    if method.needs_rationales:
        with pytest.raises(DataError, match=f"method {name} trains on the teacher's rationales"):
            build_splits(get_benchmark("svamp"), svamp_files, teacher="nobody", targets=name)
    else:
        assert build_splits(get_benchmark("svamp"), svamp_files, teacher="nobody", targets=name).train


@pytest.mark.parametrize("name", list(METHODS))
def test_the_model_trains_and_generates_as_the_method_says(name):
    from distill.models.module import DistillModule

    method = METHODS[name]
    module = DistillModule(model=TINY, method=name, shared_input=True)
    assert module.method == name and module.method_spec is method
    assert module.settings.shared_input == method.rationale_task
    batch = {"label": {"input_ids": 1}, "rationale": {"input_ids": 2}}
    assert tuple(module._tasks(batch)) == method.tasks
    module.method = "standard"  # the name and the Method are one attribute
    assert module.method_spec is METHODS["standard"] and tuple(module._tasks(batch)) == ("label",)
    with pytest.raises(ValueError, match="expected one of"):
        DistillModule(model=TINY, method="both")


def test_the_model_side_asks_the_method_never_its_name():
    """distill.models and distill.callbacks compare no method name: they ask a :class:`Method`."""
    import re
    from pathlib import Path

    import distill

    names = "|".join(METHODS)
    compared = re.compile(rf"""(==|!=|\bin)\s*[(\[{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    root = Path(distill.__file__).parent
    offenders = [f"{path.relative_to(root)}:{number}: {line.strip()}"
                 for folder in ("models", "callbacks") for path in sorted((root / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if compared.search(line)]
    assert not offenders, "\n".join(offenders)
    assert compared.search('if method == "step_by_step":') and compared.search("x in ('standard', 'other')")
