"""Display names in tables and plots: the paper's name of a method and label source, the
follow-up choices a configuration made, a series' loss weight and learning rate, the students
in size order, a training-data fraction in percent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

#: the paper's students in size order, for the model-size axis when parameter counts are unknown
MODEL_ORDER = ("tiny", "minilm", "t5_v1_1_small", "flan_t5_small", "t5_v1_1_base", "flan_t5_base",
               "t5_v1_1_large", "flan_t5_large", "t5_v1_1_xxl")


def method_label(method: Any, label_source: Any, shared_input: Any = False) -> str:
    """The paper's name for a method and label source (and the shared-input layout of step-by-step)."""
    gold = label_source in (None, "gold")
    if method == "standard":
        return "standard finetuning" if gold else "standard distillation"
    if method == "step_by_step":
        return ("distilling step-by-step" + ("" if gold else " (teacher labels)")
                + (" (shared input)" if shared_input else ""))
    if method == "single_task":
        return "single-task rationale+label" + ("" if gold else " (teacher labels)")
    return f"{method} ({label_source})"


def variant_label(key: Mapping[str, Any]) -> str:
    """The follow-up literature's choices a configuration made, where not the paper's (empty for the paper's)."""
    parts = []
    if key.get("label_source") == "teacher_vote":
        parts.append("vote labels")
    if key.get("rationales") not in (None, "first"):
        parts.append(f"{key['rationales']} rationales")
    if key.get("rationale_filter") not in (None, "none"):
        parts.append(str(key["rationale_filter"]).replace("_", "-"))
    if key.get("method") == "single_task" and key.get("rationale_position") == "after":
        parts.append("label first")
    return f" ({', '.join(parts)})" if parts else ""


def config_label(key: Mapping[str, Any]) -> str:
    """A configuration's method name with its follow-up choices."""
    return method_label(key["method"], key["label_source"], key.get("shared_input")) + variant_label(key)


def given(value: Any) -> bool:
    """Neither None nor NaN."""
    return value is not None and not pd.isna(value)


def series_label(row: Mapping[str, Any], lambdas_vary: bool, lrs_vary: bool = False) -> str:
    """A configuration's name in a table or legend where its panel varies λ/α or the learning rate."""
    label = row["method_label"]
    if row["method"] == "step_by_step" and lambdas_vary:
        if given(row["alpha"]):
            label += f", α={row['alpha']:g}"
        else:
            label += f", λ={row['rationale_weight']:g}"
    if lrs_vary and given(row.get("lr")):
        label += f", lr={row['lr']:g}"
    return label


def model_rank(name: Any) -> int:
    """A student's place in :data:`MODEL_ORDER` (unknown ones last)."""
    return MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER)


def fmt_fraction(value: Any) -> str:
    """A training-data fraction in percent: ``0.125`` -> ``12.5%``."""
    try:
        return f"{float(value) * 100:g}%"
    except (TypeError, ValueError):
        return str(value)
