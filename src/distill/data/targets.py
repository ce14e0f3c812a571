"""The single-task baseline's target: one sequence holding the rationale and then the label.

The paper's single-task baseline trains one output, "rationale then label", instead of two
tasks. The target is ``"<rationale> So the answer is <label>"`` (just ``"So the answer is
<label>"`` when an example has no rationale). The label is read back from the *last* marker,
case-insensitively, so the text a lower-casing tokenizer decodes (``so the answer is ...``)
parses too.
"""

from __future__ import annotations

import re

__all__ = ["ANSWER_MARKER", "single_task_target", "split_single_task_output"]

ANSWER_MARKER = "So the answer is"
_MARKER = re.compile(r"so\s+the\s+answer\s+is\s*:?", re.IGNORECASE)


def single_task_target(rationale: str | None, label: str) -> str:
    """One target sequence: the rationale (when there is one), the marker, the label."""
    rationale = (rationale or "").strip()
    return f"{rationale} {ANSWER_MARKER} {label}" if rationale else f"{ANSWER_MARKER} {label}"


def split_single_task_output(text: str) -> tuple[str | None, str]:
    """``(rationale, label)`` from a generated single-task output.

    Without the marker the whole text is taken as the label (rationale None), so a model
    that skips the rationale is still scored on what it answered.
    """
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None, text.strip()
    last = matches[-1]
    rationale = text[: last.start()].strip()
    return (rationale or None), text[last.end() :].strip()
