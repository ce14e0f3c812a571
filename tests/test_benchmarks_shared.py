"""The release's teacher figures under the official parsing rules, on the real files
(../shared/datasets or $DISTILL_SHARED_DATA): the issue's "Must show" acceptance figures."""

from __future__ import annotations

import pytest

from distill.benchmarks import get_benchmark
from distill.data.files import load_file

pytestmark = pytest.mark.shared

# (benchmark, file split): rows, teacher accuracy (rounded as the figure is quoted), parse failures
FIGURES = [
    ("cqa", "test", 1221, "0.7723", 0),
    ("cqa", "train", 9741, None, 3),
    ("svamp", "train", 800, None, 13),
    ("svamp", "test", 200, None, 2),
    ("anli1", "test", 1000, "0.656", 10),
    ("anli1", "valid", 1000, None, 9),
    ("esnli", "test", 9824, "0.7299", 0),
    ("esnli", "valid", 9842, None, 4),
]


@pytest.mark.parametrize("name, file_split, rows, accuracy, failures", FIGURES)
def test_release_teacher_figures(shared_data, name, file_split, rows, accuracy, failures):
    examples, stats = load_file(get_benchmark(name), shared_data, file_split, teacher="llm")
    assert stats.rows == len(examples) == rows
    assert stats.parse_failures == failures
    assert sum(e.teacher_error is not None for e in examples) == failures
    # an unparsed completion keeps the example but has neither rationale nor teacher label
    assert all(e.rationale is None and e.teacher_label is None for e in examples if e.teacher_error)
    if accuracy is not None:
        digits = len(accuracy.split(".")[1])
        assert f"{stats.teacher_accuracy:.{digits}f}" == accuracy


def test_svamp_teacher_accuracy_without_eval(shared_data):
    """Two svamp train completions answer "(a) and (b)", which the official ``eval`` scores by
    Python's ``and``; the safe parser calls them not-a-number, so 0.7325 instead of 0.7350."""
    _, stats = load_file(get_benchmark("svamp"), shared_data, "train", teacher="llm")
    assert round(stats.teacher_accuracy, 4) == 0.7325
