"""The training methods (``conf/method/``) and what each needs: the one place that says so.

The model, the data module, the splits and the encoder ask a :class:`Method` instead of comparing
names; ``method.name`` stays the name in configs, checkpoints, cache keys and ``results.json``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METHODS", "Method", "get_method"]


@dataclass(frozen=True)
class Method:
    """One method. ``rationale_task``: each train step also learns the rationale as a second task
    (sharing all weights, so inputs carry task prefixes); ``needs_rationales``: it learns from the
    teacher's rationales (the train file needs them); ``label_holds_rationale``: the label target is
    the rationale and the label in one sequence (:mod:`distill.data.targets`), generated and parsed
    back so, within the label and rationale budgets together."""

    name: str
    rationale_task: bool = False
    needs_rationales: bool = False
    label_holds_rationale: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks a train step learns."""
        return ("label", "rationale") if self.rationale_task else ("label",)

    def label_budget(self, max_target_length: int, max_rationale_length: int) -> int:
        """Tokens of the label target (and of a generated label): the label's, plus the rationale's
        where the label target holds the rationale."""
        return max_target_length + (max_rationale_length if self.label_holds_rationale else 0)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("standard"),
        Method("step_by_step", rationale_task=True, needs_rationales=True),
        Method("single_task", needs_rationales=True, label_holds_rationale=True),
    )
}


def get_method(method: str | Method) -> Method:
    """The :class:`Method` of a name (a Method is returned as it is)."""
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"method.name={method!r}: expected one of {tuple(METHODS)}") from None
