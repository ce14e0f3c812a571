"""A benchmark described in YAML alone, for a new task without new code (the keys: ``conf/data/jsonl.yaml``).
Files follow the release layout (``{data_dir}/{name}/{name}_{split}.json``, optional teacher shards).
Teacher completions are cut at the first ``stop`` string, then split at the *last* ``answer_marker``; the
label is the remainder trimmed, with one trailing full stop removed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distill.benchmarks.base import Benchmark, Example, Exemplar, ParsedCompletion, read_exemplars

__all__ = ["JsonlBenchmark"]


def _fields(record: Mapping[str, Any]) -> str:
    return f"(its fields: {', '.join(sorted(map(str, record))) or 'none'})"


class JsonlBenchmark(Benchmark):
    """A task configured entirely by field names, a template and an optional label space."""

    name = "jsonl"
    exemplars: tuple[Exemplar, ...] = ()

    def __init__(self, name: str, label_field: str, input_fields: Sequence[str] | None = None,
                 template: str | None = None, input_separator: str = "\n", label_space: Sequence[str] | None = None,
                 label_map: Mapping[Any, str] | None = None, rationale_field: str | None = None,
                 teacher_label_field: str | None = None, id_field: str | None = None,
                 answer_marker: str = "So the answer is", stop: Sequence[str] = ("\n\nQ:",),
                 exemplars: Sequence[Mapping[str, str]] | None = None, prompt_file: str | None = None) -> None:
        if (input_fields is None) == (template is None):
            raise ValueError("JsonlBenchmark needs exactly one of input_fields (a list of field names) or template")
        if isinstance(input_fields, str):
            input_fields = [input_fields]
        self.name = name
        self.label_field = label_field
        self.input_fields = list(input_fields) if input_fields is not None else None
        self.template = template
        self.input_separator = input_separator
        self.label_space = tuple(str(label) for label in label_space) if label_space is not None else None
        self.label_map = {str(k): str(v) for k, v in label_map.items()} if label_map else None
        self.rationale_field = rationale_field
        self.teacher_label_field = teacher_label_field
        self.id_field = id_field
        self.answer_marker = answer_marker
        self.stop = self.stop_sequences = tuple(stop)
        self.exemplars = tuple(Exemplar(**dict(e)) for e in exemplars) if exemplars else ()
        # teacher prompt: few-shot exemplars from a YAML/JSON prompt file (a list of
        # {input, rationale, label}; inputs as the student sees them), cut at the same stop strings
        if prompt_file is not None:
            if exemplars:
                raise ValueError("JsonlBenchmark takes exemplars or prompt_file, not both")
            self.exemplars = read_exemplars(prompt_file)

    # ----------------------------------------------------------------- records
    def configured_fields(self) -> dict[str, str]:
        optional = {"rationale_field": self.rationale_field, "teacher_label_field": self.teacher_label_field}
        return {setting: name for setting, name in optional.items() if name is not None}

    def _input(self, record: Mapping[str, Any]) -> str:
        if self.template is not None:
            try:
                return self.template.format_map(record)
            except KeyError as err:
                raise KeyError(f"template field {err.args[0]!r} is not in the record {_fields(record)}") from None
        parts = []
        for field in self.input_fields or ():
            if field not in record:
                raise KeyError(f"input field {field!r} is not in the record {_fields(record)}")
            parts.append(str(record[field]))
        return self.input_separator.join(parts)

    def _label(self, value: Any) -> str:
        if self.label_map is not None:
            key = str(value).lower() if isinstance(value, bool) else str(value)
            if key not in self.label_map:
                raise ValueError(f"label {value!r} is not a key of label_map {sorted(self.label_map)}")
            return self.label_map[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"label {value!r} must be a string or a number (or use label_map)")
        return str(value)

    def to_example(self, record: Mapping[str, Any], uid: str) -> Example:
        if self.label_field not in record:
            raise KeyError(f"label field {self.label_field!r} is not in the record {_fields(record)}")
        gold = self._label(record[self.label_field])
        if not self.in_label_space(gold):
            raise ValueError(f"label {gold!r} is outside the label space {list(self.label_space or ())}")
        rationale = teacher_label = None
        if self.rationale_field is not None and record.get(self.rationale_field) is not None:
            rationale = str(record[self.rationale_field])
        if self.teacher_label_field is not None and record.get(self.teacher_label_field) is not None:
            teacher_label = self._label(record[self.teacher_label_field])
        if self.id_field is not None:
            uid = str(record[self.id_field])
        return Example(uid=uid, input=self._input(record), gold=gold, teacher_label=teacher_label, rationale=rationale,
                       record=record)

    # ----------------------------------------------------------------- teacher output
    def parse_completion(self, text: str) -> ParsedCompletion:
        head = text
        for stop in self.stop:
            head = head.split(stop)[0]
        head = head.rstrip()
        if self.answer_marker not in head:
            return ParsedCompletion(head, None, f"no {self.answer_marker!r} in the completion")
        rationale, tail = head.rsplit(self.answer_marker, 1)
        label = tail.strip().removesuffix(".").rstrip()
        if not label:
            return ParsedCompletion(rationale.rstrip(), None, f"no label after {self.answer_marker!r}")
        return ParsedCompletion(rationale.rstrip(), label)

    def format_answer(self, rationale: str, label: str) -> str:
        return f"{rationale} {self.answer_marker} {label}."
