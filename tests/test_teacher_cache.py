"""The answer cache (durable, content-keyed, one file per writer) and the self-consistency vote."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import distill  # noqa: F401  (the resolvers the configs use)
from distill.benchmarks import get_benchmark
from distill.benchmarks.base import Example
from distill.teacher.annotator import build_backend, build_benchmark, build_requests
from distill.teacher.cache import Answer, AnswerCache, CacheBusyError, request_key
from distill.teacher.vote import majority_vote


def test_request_key_is_canonical_and_sensitive():
    a = request_key({"prompt": "p", "model": "m", "sampling": {"t": 0, "max": 5}, "sample": 0})
    assert a == request_key({"sample": 0, "sampling": {"max": 5, "t": 0}, "model": "m", "prompt": "p"})
    for change in ({"prompt": "p "}, {"model": "m2"}, {"sampling": {"t": 0.7, "max": 5}}, {"sample": 1}):
        assert request_key({"prompt": "p", "model": "m", "sampling": {"t": 0, "max": 5}, "sample": 0,
                            **change}) != a


#: the keys of one SVAMP row under three teacher configs, computed before the backend settings moved
#: under teacher.backend (commit b481d6d): a cached answer stays valid only while these hold
PINNED_KEYS = {
    ("teacher=openai", "teacher.backend.model=pinned/model"):
        ["e3454efb2e9c1844c42c79bbd4a61668c0aec6e86392a20168e8869a5dd1b6df"],
    ("teacher=openai", "teacher.backend.model=pinned/model", "teacher.backend.chat=false",
     "teacher.backend.temperature=0.7", "teacher.backend.seed=3", "+teacher.backend.extra_body.top_k=20",
     "teacher.samples=2"):
        ["5932e20d74386f0b23a48a1afd2773682ab816ad313d9ac0bb2ef1bf19643016",
         "88e154655086ed683510187846181516e78ce03fa6dfaf7d4b26851db0f5896a"],
    ("teacher=hf", "teacher.backend.model=pinned/model", "teacher.backend.temperature=0.7", "teacher.samples=2"):
        ["966fb3c62f9f2bc84072bf92d303b11ba6e69a030283fcfe05a7e39b57bb1f0f",
         "11e59d54043142762caa052c65fe43b4dd531364b5369e812b3af865221bb66f"],
}


@pytest.mark.parametrize("overrides", list(PINNED_KEYS), ids=["openai", "openai_sampled", "hf_sampled"])
def test_the_cache_keys_of_a_fixed_config_do_not_move(overrides):
    """conf/annotate.yaml composed with ``overrides``, its backend and benchmark built as annotate.py
    builds them: the request keys of one fixed row are the pinned ones."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="annotate", overrides=["data=svamp", *overrides])
    example = Example("svamp/train/0", "Jack had 3 apples and ate 1. How many apples does Jack have now?", "2")
    items, _ = build_requests(build_benchmark(cfg.data), build_backend(cfg.teacher.backend), [(0, example)],
                              int(cfg.teacher.samples))
    assert items[0].keys == PINNED_KEYS[overrides]


def test_answers_survive_reopening_and_an_answer_beats_a_failure(tmp_path):
    with AnswerCache(tmp_path, "w1") as c:
        c.put("k1", Answer("first", prompt_tokens=3, completion_tokens=1))
        c.put("k2", Answer(None, "HTTP 500 (gave up after 3 attempts)", attempts=3))
        c.put("k3", Answer(None, "timeout"))
    with AnswerCache(tmp_path, "w2") as c:  # another job's file in the same directory
        c.put("k2", Answer("second"))
        c.put("k1", Answer(None, "HTTP 500"))  # a later failure does not hide an answer
    got = AnswerCache(tmp_path, "reader").load()
    assert got["k1"].text == "first" and got["k1"].prompt_tokens == 3
    assert got["k2"].ok and got["k2"].text == "second"
    assert not got["k3"].ok and got["k3"].error == "timeout"
    assert set(AnswerCache(tmp_path, "r").load(wanted={"k3"})) == {"k3"}


def test_a_torn_last_line_is_ignored_and_cut_before_appending(tmp_path):
    with AnswerCache(tmp_path, "w") as c:
        c.put("k1", Answer("one"))
    path = tmp_path / "w.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"key": "k2", "text": "half a li')  # what a kill mid-write could leave
    reader = AnswerCache(tmp_path, "r")
    assert set(reader.load()) == {"k1"} and reader.torn_lines == 1
    with AnswerCache(tmp_path, "w") as c:
        c.put("k3", Answer("three"))
    assert path.read_text().count("\n") == 2 and "half a li" not in path.read_text()
    assert {k: a.text for k, a in AnswerCache(tmp_path, "r").load().items()} == {"k1": "one", "k3": "three"}


def test_two_writers_on_one_file_are_refused(tmp_path):
    with AnswerCache(tmp_path, "w"):
        with pytest.raises(CacheBusyError, match="distinct teacher.shard"):
            AnswerCache(tmp_path, "w").open()
    AnswerCache(tmp_path, "w").open().close()  # released on close


def test_majority_vote_groups_equal_answers_and_breaks_ties_by_order():
    svamp = get_benchmark("svamp")
    v = majority_vote(["(1 + 1)", "( 84.0 / 2.0 )", None, "(84 / 2)", "(2)", "(40 + 2)"], svamp.score)
    assert v.chosen == 1 and v.label == "( 84.0 / 2.0 )"
    assert v.counts == (("(1 + 1)", 2), ("( 84.0 / 2.0 )", 3))  # equal values vote together
    # a tie goes to the class that appeared first
    assert majority_vote(["b", "a", "a", "b"], lambda x, y: x == y).chosen == 0
    assert majority_vote([None, None], lambda x, y: x == y).chosen is None

