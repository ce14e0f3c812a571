"""Few-shot prompts: every benchmark's answers round-trip through its parser, and prompts are built
in both forms from the exemplars."""

from __future__ import annotations

import json

import pytest

from distill.benchmarks import JsonlBenchmark, get_benchmark
from distill.benchmarks.base import DataError, Example, Exemplar, read_exemplars
from distill.benchmarks.cqa import format_cqa_input

NAMED = ["svamp", "cqa", "esnli", "anli1"]


def jsonl_benchmark(tmp_path):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text(
        "- input: Is a whale a fish?\n  rationale: A whale breathes air and feeds its young milk, so it is a mammal.\n"
        "  label: 'no'\n"
        "- input: Can a cat climb trees?\n  rationale: Cats have sharp claws for gripping bark.\n  label: 'yes'\n")
    return JsonlBenchmark(name="yesno", label_field="answer", input_fields=["question"],
                          label_space=["yes", "no"], prompt_file=str(prompt))


def all_benchmarks(tmp_path):
    return [get_benchmark(n) for n in NAMED] + [jsonl_benchmark(tmp_path)]


# answers of every shape the parsers must give back: (rationale, label) per benchmark
ROUND_TRIP = {
    "svamp": [("She had 5 and got 3 more, so 5 + 3 = 8.", "(5 + 3)"), ("Half of 84 is 42.", "( 84.0 / 2.0 )")],
    "cqa": [("The answer must be a place with books. A library has them.", "library")],
    "esnli": [("A man riding a horse is outdoors.", "entailment"), ("It may or may not rain.", "neutral")],
    "anli1": [("The premise says he was born in 1950. So he is not a teenager.", "contradiction")],
    "yesno": [("A whale is a mammal.", "no")],
}


@pytest.mark.parametrize("index", range(5))
def test_format_answer_round_trips_and_every_exemplar_parses(tmp_path, index):
    bench = all_benchmarks(tmp_path)[index]
    assert len(bench.exemplars) >= (6 if bench.name in NAMED else 2)
    for rationale, label in ROUND_TRIP[bench.name]:
        if bench.name == "cqa":
            text = bench.format_answer(rationale, label, choices=["park", "library", "zoo", "bank", "farm"])
        else:
            text = bench.format_answer(rationale, label)
        parsed = bench.parse_completion(text)
        assert parsed.ok and (parsed.rationale, parsed.label) == (rationale, label)
        # and with the made-up next exemplar a teacher runs on into
        made_up = bench.query_template.format(input=bench.exemplars[0].input) + bench.answer_cue + " So"
        parsed = bench.parse_completion(text + bench.demo_separator + made_up)
        assert (parsed.rationale, parsed.label) == (rationale, label)
    for ex in bench.exemplars:
        parsed = bench.parse_completion(bench.format_exemplar(ex))
        assert parsed.ok, (bench.name, ex, parsed)
        assert (parsed.rationale, parsed.label) == (ex.rationale, ex.label)
        assert bench.in_label_space(ex.label)
        assert not any(s in ex.rationale for s in bench.stop_sequences)


@pytest.mark.parametrize("name", NAMED)
def test_exemplar_inputs_look_like_real_queries(name):
    """An exemplar's input is what prompt_input gives for a real record, and its label fits the item."""
    bench = get_benchmark(name)
    record = {"svamp": {"input": "Tim has 3 pens.\nHow many pens does Tim have?", "label": "( 3.0 )"},
              "cqa": {"id": "x", "question": "Where?", "choices": ["a", "b", "c", "d", "e"], "answer": "c"},
              "esnli": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
              "anli1": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}}[name]
    shown = bench.prompt_input(bench.to_example(record, "u"))
    for ex in bench.exemplars:
        assert ex.input.count("\n") == shown.count("\n")
        if name in ("esnli", "anli1"):
            assert ex.input.startswith("Premise: ") and "\nHypothesis: " in ex.input
        if name == "cqa":
            assert ex.input.splitlines()[1] == "Answer Choices:" and f") {ex.label}" in ex.input
    labels = {ex.label for ex in bench.exemplars}
    if bench.label_space:
        assert labels == set(bench.label_space)  # every label is demonstrated


@pytest.mark.parametrize("name", NAMED)
def test_build_prompt_completion_and_chat(name):
    bench = get_benchmark(name)
    record = {"svamp": {"input": "Tim has 3 pens and buys 2.\nHow many pens now?", "label": "( 3.0 + 2.0 )"},
              "cqa": {"id": "x", "question": "Where do fish live?", "choices": ["sea", "sky", "car", "desk", "bed"],
                      "answer": "sea"},
              "esnli": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
              "anli1": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}}[name]
    ex = bench.to_example(record, "u")
    text = bench.build_prompt(ex)
    query = bench.query_template.format(input=bench.prompt_input(ex))
    assert text.endswith(bench.demo_separator + query + bench.answer_cue)
    assert text.count(bench.answer_cue) == len(bench.exemplars) + 1
    for e in bench.exemplars:
        assert bench.format_exemplar(e) in text
    messages = bench.build_prompt(ex, chat=True)
    assert messages[0]["role"] == "system"
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * len(bench.exemplars) + ["user"]
    assert messages[-1]["content"] == query
    assert [m["content"] for m in messages[2::2]] == [bench.format_exemplar(e) for e in bench.exemplars]


def test_cqa_exemplar_names_the_right_letter():
    bench = get_benchmark("cqa")
    letters = set()
    for ex in bench.exemplars:
        answer = bench.format_exemplar(ex)
        letter = answer.split("So the answer is (")[1][0]
        assert f"({letter}) {ex.label}" in ex.input
        letters.add(letter)
    assert len(letters) >= 3  # the position of the answer varies


def test_nli_prompt_does_not_depend_on_the_student_separator():
    bench = get_benchmark("anli1")
    record = {"premise": "P.", "hypothesis": "H.", "label": 1}
    unbound = bench.prompt_input(bench.to_example(record, "u"))

    class Tok:
        eos_token = "</s>"

    bench.bind_tokenizer(Tok())
    assert bench.to_example(record, "u").input == "P.</s>H."
    assert bench.prompt_input(bench.to_example(record, "u")) == unbound == "Premise: P.\nHypothesis: H."


def test_no_exemplars_is_a_clear_error():
    bench = JsonlBenchmark(name="t", label_field="y", input_fields=["x"])
    with pytest.raises(ValueError, match="no few-shot exemplars"):
        bench.build_prompt(Example("u", "x", "y"))


def test_prompt_file_json_and_errors(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps([{"input": "a", "rationale": "b", "label": "c"}]))
    assert read_exemplars(good) == (Exemplar("a", "b", "c"),)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- input: a\n  rationale: b\n")
    with pytest.raises(DataError, match=r"bad\.yaml: item 1: needs string fields"):
        read_exemplars(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("- {input: a, rationale: b, label: c, lable: d}\n")
    with pytest.raises(DataError, match=r"extra\.yaml: item 1: unknown fields \['lable'\]"):
        read_exemplars(extra)
    with pytest.raises(DataError, match="missing.yaml: cannot read"):
        read_exemplars(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="not both"):
        JsonlBenchmark(name="t", label_field="y", input_fields=["x"], prompt_file=str(good),
                       exemplars=[{"input": "a", "rationale": "b", "label": "c"}])


def test_cqa_exemplars_use_the_student_input_format():
    ex = get_benchmark("cqa").exemplars[0]
    question = ex.input.splitlines()[0]
    choices = [line[4:] for line in ex.input.splitlines()[2:]]
    assert ex.input == format_cqa_input(question, choices)
