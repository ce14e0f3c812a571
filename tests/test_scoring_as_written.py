"""A student's label is scored against the gold or the gold as its tokenizer can write it
(:meth:`Benchmark.score_as_written`); teacher labels keep the plain :meth:`Benchmark.score`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distill.benchmarks import CQA, SVAMP
from distill.benchmarks.base import as_written
from distill.benchmarks.io import read_jsonl, records_path


def test_as_written_is_the_prediction_decode(tokenizer):
    assert as_written(tokenizer, "friend's house") == "friend ' s house"
    assert as_written(tokenizer, "washington d.c") == "washington d. c"
    assert as_written(tokenizer, "Night Light") == "night light"
    ids = tokenizer("friend's house", add_special_tokens=False).input_ids
    decoded = tokenizer.batch_decode([[tokenizer.pad_token_id, *ids, tokenizer.eos_token_id]], skip_special_tokens=True)
    assert decoded[0].strip() == as_written(tokenizer, "friend's house")


def test_a_gold_the_student_cannot_write_is_right_as_written(tokenizer):
    cqa = CQA()
    assert not cqa.score("friend ' s house", "friend's house")
    assert cqa.score_as_written("friend ' s house", "friend's house", tokenizer)
    assert cqa.score_as_written("friend's house", "friend's house", tokenizer)


def test_a_wrong_answer_stays_wrong(tokenizer):
    cqa = CQA()
    assert not cqa.score_as_written("friend ' s car", "friend's house", tokenizer)
    assert not cqa.score_as_written("night light", "friend's house", tokenizer)
    assert not cqa.score_as_written("", "friend's house", tokenizer)


class _WritesNothing:
    """A tokenizer that has no tokens for anything."""

    def __call__(self, text, **_):
        return SimpleNamespace(input_ids=[])

    def decode(self, ids, **_):
        return ""


def test_a_gold_that_writes_as_nothing_scores_only_itself():
    tok = _WritesNothing()
    assert not CQA().score_as_written("", "\u2603", tok)
    assert CQA().score_as_written("\u2603", "\u2603", tok)


def test_svamp_scores_by_value_as_before(tokenizer):
    svamp = SVAMP()
    assert svamp.score_as_written("( 84.0 / 2.0 )", "(84 / 2)", tokenizer)
    assert svamp.score_as_written(as_written(tokenizer, "( 84.0 / 2.0 )"), "( 84.0 / 2.0 )", tokenizer)
    assert not svamp.score_as_written("( 84.0 / 3.0 )", "(84 / 2)", tokenizer)
    assert not svamp.score_as_written("( 84.0 / 2.0", "(84 / 2)", tokenizer)


def test_eval_step_marks_a_written_gold_correct():
    from distill.models.module import DistillModule

    module = DistillModule(model={"kind": "tiny", "short_name": "tiny"})
    golds = ["friend's house", "washington d.c", "night light"]
    predictions = [as_written(module.tokenizer, g) for g in golds[:2]] + ["bed"]
    module.predict_labels = lambda ids, mask: (predictions, [None] * len(predictions))
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(benchmark=CQA()), testing=False)
    rows = torch.zeros(len(golds), 1, dtype=torch.long)
    batch = {"uid": ["a", "b", "c"], "input": ["q"] * 3, "gold": golds,
             "label": {"input_ids": rows, "attention_mask": rows}}
    module._eval_step(batch)
    assert [r["correct"] for r in module._eval_records] == [True, True, False]


@pytest.mark.shared
def test_every_cqa_test_gold_scores_right_as_written(shared_data, tokenizer):
    cqa = CQA()
    golds = [r["answer"] for r in read_jsonl(records_path(shared_data, "cqa", "test"))]
    assert len(golds) == 1221
    written = [as_written(tokenizer, g) for g in golds]
    assert all(cqa.score_as_written(w, g, tokenizer) for w, g in zip(written, golds))
    never_right = sum(not cqa.score(w, g) for w, g in zip(written, golds))
    assert never_right > 0  # the plain comparison could never score these right
