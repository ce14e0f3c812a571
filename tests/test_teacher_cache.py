"""The answer cache (durable, content-keyed, one file per writer) and the self-consistency vote."""

from __future__ import annotations

import pytest

from distill.benchmarks import get_benchmark
from distill.teacher.cache import Answer, AnswerCache, CacheBusyError, request_key
from distill.teacher.openai import parse_retry_after
from distill.teacher.vote import majority_vote


def test_request_key_is_canonical_and_sensitive():
    a = request_key({"prompt": "p", "model": "m", "sampling": {"t": 0, "max": 5}, "sample": 0})
    assert a == request_key({"sample": 0, "sampling": {"max": 5, "t": 0}, "model": "m", "prompt": "p"})
    for change in ({"prompt": "p "}, {"model": "m2"}, {"sampling": {"t": 0.7, "max": 5}}, {"sample": 1}):
        assert request_key({"prompt": "p", "model": "m", "sampling": {"t": 0, "max": 5}, "sample": 0,
                            **change}) != a


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


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
