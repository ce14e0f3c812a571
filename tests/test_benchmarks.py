"""Benchmarks in isolation: safe arithmetic, parsing rules, input formats, label spaces, registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.benchmarks import (
    ANLI1,
    CQA,
    ESNLI,
    SVAMP,
    Benchmark,
    Exemplar,
    JsonlBenchmark,
    benchmark_class,
    build,
    get_benchmark,
)
from distill.benchmarks.equation import evaluate, same_value

# --------------------------------------------------------------------------- safe arithmetic


def test_svamp_scores_by_numeric_value():
    svamp = SVAMP()
    assert svamp.score("( 84.0 / 2.0 )", "(84 / 2)")
    assert svamp.score("(84 / 2)", "( 84.0 / 2.0 )")
    assert svamp.score("(10 - (6 + 3))", "( 10.0 - ( 6.0 + 3.0 ) )")
    assert svamp.score("(0.1 + 0.2)", "(0.3)")  # float rounding is not a different answer
    assert not svamp.score("(84 / 3)", "(84 / 2)")
    assert not svamp.score("", "(84 / 2)")
    # what the offline MiniLM decodes "( 84.0 / 2.0 )" to
    assert svamp.score("( 84. 0 / 2. 0 )", "(84 / 2)")


def test_svamp_scoring_never_executes_text(tmp_path: Path):
    svamp = SVAMP()
    marker = tmp_path / "pwned"
    attacks = [
        f"__import__('os').system('touch {marker}')",
        "__import__('os').system('touch /tmp/pwned')",
        f"(1 + __import__('os').system('touch {marker}'))",
        f"[x for x in ().__class__.__base__.__subclasses__()] or open('{marker}', 'w')",
    ]
    before = Path("/tmp/pwned").stat().st_mtime_ns if Path("/tmp/pwned").exists() else None
    for attack in attacks:
        assert evaluate(attack) is None
        assert not svamp.score(attack, "(1 + 1)")
        assert not svamp.score("(1 + 1)", attack)
    assert not marker.exists()
    after = Path("/tmp/pwned").stat().st_mtime_ns if Path("/tmp/pwned").exists() else None
    assert after == before


@pytest.mark.parametrize(
    "text, value",
    [("( 84.0 / 2.0 )", 42.0), ("-(3 - 5)", 2.0), ("2 * -3", -6.0), ("((1))", 1.0), ("7", 7.0), (" 1.5*2 ", 3.0)],
)
def test_evaluate_plain_arithmetic(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "2 ** 3", "7 // 2", "7 % 2", "abs(-1)", "x + 1", "'a'", "1, 2", "322,775", "True + 1", "1 / 0",
        "(1 +", "1 if 1 else 2", "[1]", "lambda: 1", "+1", "1 < 2", "(2 * x)", "(7x = 14)", "1e999",
        "(" * 300 + "1" + ")" * 300, "1 + " * 400 + "1", None, "",
    ],
)
def test_evaluate_refuses_anything_but_arithmetic(text):
    assert evaluate(text) is None


def test_same_value_needs_two_numbers():
    assert same_value("(2 + 2)", "4")
    assert not same_value("(2 + 2)", None)
    assert not same_value("nonsense", "nonsense")


# --------------------------------------------------------------------------- parsing rules


def test_cqa_parsing_follows_the_release():
    cqa = CQA()
    parsed = cqa.parse_completion("Beavers live near trees. So the answer is (c) wooded area.\n\nQ: next?\nA: (a) x")
    assert parsed.ok and parsed.label == "wooded area" and parsed.rationale == "Beavers live near trees."
    # no lettered marker, two answers, empty label: failures with a reason
    for text in [
        "Several hold shirts. So the answer is one of these four.\n\nQ: next",
        "So the answer is (a) x. So the answer is (b) y.",
        "No answer at all.",
        "Reasons. So the answer is (d) .",
    ]:
        parsed = cqa.parse_completion(text)
        assert not parsed.ok and parsed.label is None and parsed.error
    # the first Q: cuts, wherever it is
    assert not cqa.parse_completion("Q: So the answer is (a) x.").ok


def test_svamp_parsing_follows_the_release():
    svamp = SVAMP()
    parsed = svamp.parse_completion("10 * 45 is 450. The answer is (10 * 45).\n\nQ: next\nA: The answer is (1).")
    assert parsed.ok and parsed.label == "(10 * 45)" and parsed.rationale == "10 * 45 is 450."
    # greedy to the last ')' on the line, as the official regex
    assert svamp.parse_completion("r. The answer is (1 + 2) and (3).").label == "(1 + 2) and (3)"
    assert not svamp.parse_completion("r. The answer is 450.").ok
    assert not svamp.parse_completion("No answer here").ok
    assert not svamp.parse_completion("The answer is (1). The answer is (2).").ok


def test_svamp_parsing_and_scoring_are_linear_in_the_text():
    """A completion of 100,000 '(' with no ')' made the official regex backtrack for seconds
    (quadratic); parsing and scoring now take one pass over the text."""
    import re
    import time

    svamp = SVAMP()
    hostile = ["The answer is " + "(" * 100_000, "The answer is " + "(1 + " * 50_000, "The answer is (" + " " * 100_000]
    started = time.perf_counter()
    for text in hostile:
        assert not svamp.parse_completion(text).ok
        assert not svamp.score(text, "(1 + 2)")
    assert time.perf_counter() - started < 1.0
    # the same label as the official regex (first '(' to last ')' on the first line that has both)
    official = re.compile(r"\(.*\)")
    for tail in [" (1 + 2).", " 3) (1 + 2) x", " ((\n(4 - 1))", " )(\n (2)", " (\n)\n(5 / 5) and (1)", " none\n"]:
        parsed = svamp.parse_completion("r." + " The answer is" + tail)
        match = official.search(tail)
        assert parsed.label == (match.group(0) if match else None), tail


def test_esnli_parsing_follows_the_release():
    esnli = ESNLI()
    parsed = esnli.parse_completion("A dog is an animal.\nAnswer: entailment\n\nPremise: next\nHypothesis: x")
    assert parsed.ok and parsed.label == "entailment" and parsed.rationale == "A dog is an animal."
    assert not esnli.parse_completion("A toddler is a child. A child is a person").ok
    truncated = esnli.parse_completion("r\nAnswer: entailment\n\nPre")
    assert truncated.ok and truncated.label == "entailment\n\nPre" and not esnli.in_label_space(truncated.label)


def test_anli1_parsing_follows_the_release():
    anli = ANLI1()
    parsed = anli.parse_completion("Oxford Street is in London. So the answer is contradiction.\n\nPremise: next")
    assert parsed.ok and parsed.label == "contradiction" and parsed.rationale == "Oxford Street is in London."
    assert not anli.parse_completion("It was filmed in 1971, so the answer is entailment.\n\nPremise: x").ok
    assert not anli.parse_completion("r. So the answer is").ok


@pytest.mark.parametrize("bench", [SVAMP(), ESNLI(), ANLI1(), JsonlBenchmark(name="t", label_field="y", input_fields=["x"])])
def test_format_answer_is_what_the_parser_reads(bench):
    label = "(3 + 4)" if isinstance(bench, SVAMP) else "neutral"
    # the teacher runs on into a made-up next exemplar, which the parser cuts off
    continuation = "\n\nPremise: next" if isinstance(bench, (ESNLI, ANLI1)) else "\n\nQ: next"
    parsed = bench.parse_completion(bench.format_answer("Some reasoning here.", label) + continuation)
    assert parsed.ok and parsed.label == label and parsed.rationale == "Some reasoning here."


def test_cqa_format_answer_names_the_letter():
    cqa = CQA()
    choices = ["bank", "river", "wooded area", "zoo", "home"]
    text = cqa.format_answer("Trees are there.", "wooded area", choices=choices)
    assert "(c) wooded area" in text
    assert cqa.parse_completion(text).label == "wooded area"
    with pytest.raises(ValueError):
        cqa.format_answer("r", "wooded area")
    exemplar = Exemplar("Where?\nAnswer Choices:\n(a) bank\n(b) river\n(c) wooded area", "Trees are there.", "wooded area")
    assert "(c) wooded area" in cqa.format_exemplar(exemplar)


@pytest.mark.parametrize("name", ["esnli", "anli1", "cqa", "svamp"])
def test_every_prompt_exemplar_parses_back(name):
    bench = get_benchmark(name)
    for exemplar in bench.exemplars:
        parsed = bench.parse_completion(bench.format_exemplar(exemplar))
        assert parsed.ok, (exemplar, parsed.error)
        assert parsed.label == exemplar.label
        assert bench.score(parsed.label, exemplar.label)


# --------------------------------------------------------------------------- records and inputs


def test_cqa_input_is_the_official_format():
    record = {"id": "1", "question": "Q?", "choices": ["a1", "b1", "c1", "d1", "e1"], "answer": "c1"}
    example = CQA().to_example(record, "u")
    assert example.input == "Q?\nAnswer Choices:\n(a) a1\n(b) b1\n(c) c1\n(d) d1\n(e) e1"
    assert example.gold == "c1"
    assert CQA().label_fits("c1", example) and not CQA().label_fits("f1", example)
    with pytest.raises(ValueError, match="not one of the item's choices"):
        CQA().to_example({**record, "answer": "zz"}, "u")


def test_nli_labels_and_separator(tokenizer):
    esnli = ESNLI()
    record = {"premise": "P.", "hypothesis": "H.", "label": 2}
    assert esnli.to_example(record, "u").gold == "contradiction"
    assert esnli.to_example({**record, "label": "neutral"}, "u").gold == "neutral"
    for bad in (3, -1, "maybe", True, None):
        with pytest.raises(ValueError):
            esnli.to_example({**record, "label": bad}, "u")
    # official: premise and hypothesis joined by the tokenizer's eos token
    esnli.bind_tokenizer(tokenizer)
    assert esnli.to_example(record, "u").input == "P.[SEP]H."
    assert ESNLI(separator=" | ").to_example(record, "u").input == "P. | H."


def test_svamp_gold_must_be_arithmetic():
    with pytest.raises(ValueError, match="not an arithmetic expression"):
        SVAMP().to_example({"input": "q", "label": "( x + 1 )"}, "u")
    assert SVAMP().in_label_space("(1 + 2)") and not SVAMP().in_label_space("(some - 8)")


def test_jsonl_benchmark_from_settings_alone():
    bench = JsonlBenchmark(
        name="mytask",
        template="Question: {q}\nContext: {c}",
        label_field="y",
        label_map={0: "no", 1: "yes"},
        label_space=["no", "yes"],
        rationale_field="why",
    )
    example = bench.to_example({"q": "Is it?", "c": "It is.", "y": 1, "why": "Because."}, "u")
    assert (example.input, example.gold, example.rationale) == ("Question: Is it?\nContext: It is.", "yes", "Because.")
    with pytest.raises(ValueError, match="label_map"):
        bench.to_example({"q": "a", "c": "b", "y": 7}, "u")
    with pytest.raises(KeyError):
        bench.to_example({"q": "a", "y": 1}, "u")
    free = JsonlBenchmark(name="free", input_fields=["a", "b"], label_field="y", input_separator=" || ")
    assert free.to_example({"a": "x", "b": "z", "y": "anything"}, "u").input == "x || z"
    closed = JsonlBenchmark(name="closed", input_fields=["a"], label_field="y", label_space=["p", "q"])
    with pytest.raises(ValueError, match="outside the label space"):
        closed.to_example({"a": "x", "y": "r"}, "u")
    parsed = free.parse_completion("Because x. So the answer is z.\n\nQ: next. So the answer is w.")
    assert parsed.ok and parsed.label == "z"
    with pytest.raises(ValueError, match="exactly one"):
        JsonlBenchmark(name="bad", label_field="y")


# --------------------------------------------------------------------------- registry


def test_registry_builds_every_benchmark():
    for name, cls in [("esnli", ESNLI), ("anli1", ANLI1), ("cqa", CQA), ("svamp", SVAMP)]:
        assert benchmark_class(name) is cls
        assert isinstance(get_benchmark(name), cls) and get_benchmark(name).name == name
        assert isinstance(build(name), cls)
    assert get_benchmark("jsonl", name="mytask", label_field="y", input_fields=["x"]).name == "mytask"
    assert issubclass(benchmark_class("jsonl"), Benchmark)
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_benchmark("nope")
    with pytest.raises(ValueError, match="JsonlBenchmark"):
        build("jsonl")
