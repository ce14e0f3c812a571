"""The single-task baseline's target, one sequence of rationale and label (``method.rationale_position``):
``before``, the paper's ``"<rationale> So the answer is <label>"`` (the label read back after the *last*
marker); ``after``, ``"<label> Explanation: <rationale>"`` (read back before the *first* marker). Without
a rationale, ``"So the answer is <label>"`` or ``"<label>"``. Markers match case-insensitively."""

from __future__ import annotations

import re

__all__ = ["ANSWER_MARKER", "EXPLANATION_MARKER", "RATIONALE_POSITIONS", "TEACHER_LABELS", "single_task_target",
           "split_single_task_output"]

#: label sources under which the student learns the teacher's labels
TEACHER_LABELS = ("teacher", "teacher_vote")
ANSWER_MARKER = "So the answer is"
EXPLANATION_MARKER = "Explanation:"
RATIONALE_POSITIONS = ("before", "after")
_MARKER = re.compile(r"so\s+the\s+answer\s+is\s*:?", re.IGNORECASE)
_EXPLANATION = re.compile(r"\s*explanation\s*:", re.IGNORECASE)


def single_task_target(rationale: str | None, label: str, position: str = "before") -> str:
    """One target sequence: the rationale (when there is one) and the label, in ``position``'s order."""
    rationale = (rationale or "").strip()
    if position == "after":
        return f"{label} {EXPLANATION_MARKER} {rationale}" if rationale else label
    if position != "before":
        raise ValueError(f"method.rationale_position must be one of {RATIONALE_POSITIONS}, got {position!r}")
    return f"{rationale} {ANSWER_MARKER} {label}" if rationale else f"{ANSWER_MARKER} {label}"


def split_single_task_output(text: str, position: str = "before") -> tuple[str | None, str]:
    """``(rationale, label)`` from a generated single-task output laid out as ``position`` says.

    Without the marker the whole text is taken as the label (rationale None), so a model
    that skips the rationale is still scored on what it answered.
    """
    if position == "after":
        match = _EXPLANATION.search(text)
        if match is None:
            return None, text.strip()
        return (text[match.end() :].strip() or None), text[: match.start()].strip()
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None, text.strip()
    last = matches[-1]
    rationale = text[: last.start()].strip()
    return (rationale or None), text[last.end() :].strip()
