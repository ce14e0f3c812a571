"""The data summary (docs/data.md): :func:`format_summary`, printed at the start of a run and by
``python -m distill.data summary``: the files as released (rows, teacher accuracy, parse failures, labels
outside the label space), the splits as trained, token lengths against the configured limits, and
warnings (teacher labels at chance, step_by_step with rationales on under :data:`LOW_RATIONALE_SHARE` of
train). A report, not a training run: a train file without the teacher's shards shows ``TEACHER:missing``."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.data.cache import cached_json
from distill.data.files import teacher_counts
from distill.data.splits import SPLITS

if TYPE_CHECKING:
    from distill.data.datamodule import DistillDataModule

__all__ = ["LOW_RATIONALE_SHARE", "format_summary", "length_stats", "split_figures", "summary_figures",
           "summary_warnings", "test_baselines", "validation_note"]

#: step_by_step with rationales on fewer train examples than this share is warned about
LOW_RATIONALE_SHARE = 0.5


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def length_stats(lengths: Sequence[int], limit: int) -> str:
    """``p50/p90/p99/max`` of token lengths, plus how many exceed ``limit``."""
    if not lengths:
        return "-"
    arr = np.asarray(lengths)
    p50, p90, p99 = (int(round(float(np.percentile(arr, q)))) for q in (50, 90, 99))
    over = int((arr > limit).sum())
    return f"{p50}/{p90}/{p99}/{int(arr.max())}" + (f" ({over} > {limit})" if over else "")


def split_figures(datamodule: DistillDataModule, split: str) -> dict[str, Any]:
    """Teacher figures over the examples a split holds (dropped ones count as parse failures)."""
    counts = teacher_counts(datamodule.benchmark, datamodule.examples(split))
    dropped = datamodule.splits.dropped.get(split, 0)
    rows, parsed, correct, failures = counts["rows"], counts["parsed"], counts["correct"], counts["failures"] + dropped
    has_teacher, total = parsed > 0 or failures > 0, rows + dropped
    return {
        "rows": rows, "rationales": counts["rationales"], "dropped": dropped,
        # the teacher's own accuracy against gold (an unparsed completion counts as wrong); None: no teacher
        "teacher_accuracy": correct / total if has_teacher and total else None,
        "teacher_acc": (f"{correct / total:.4f}" if total else "-") if has_teacher else "-",
        "parse_failures": failures if has_teacher else "-",
        "outside_label_space": counts["outside"] if has_teacher else "-",
    }


def test_baselines(datamodule: DistillDataModule) -> dict[str, float]:
    """A run's yardsticks on test: ``test/majority_baseline`` (the share of its most common gold label) and,
    where the teacher labelled test, ``test/teacher_acc`` (the teacher's own labels on the same examples)."""
    golds = [e.gold.strip() for e in datamodule.examples("test") if e.gold is not None]
    baselines = {"test/majority_baseline": Counter(golds).most_common(1)[0][1] / len(golds) if golds else float("nan")}
    teacher = split_figures(datamodule, "test")["teacher_accuracy"]
    return baselines if teacher is None else {**baselines, "test/teacher_acc": teacher}


def _length_rows(dm: DistillDataModule) -> list[list[str]]:
    """Per split, the token-length figures of inputs, label targets and rationales, read from the
    tokenized split (counts before truncation; a row without a target or rationale counts 0)."""
    rows = []
    for split in SPLITS:
        if not dm.examples(split):
            rows.append([split, "-", "-", "-"])
            continue
        data = dm.dataset(split)
        rows.append([split, length_stats(list(data["input_tokens"]), dm.max_input_length),
                     length_stats([n for n in data["label_tokens"] if n], dm.label_budget),
                     length_stats([n for n in data["rationale_tokens"] if n], dm.max_rationale_length)])
    return rows


def summary_figures(datamodule: DistillDataModule) -> dict[str, Any]:
    """The figures the summary computes from the examples: :func:`split_figures` per split and the
    token-length rows (with a tokenizer). Computed once per data version and tokenized splits when the
    data module has a cache (``cache_dir``), read from there afterwards."""
    dm = datamodule
    tokenized = [dm.tokenized_parts(split) for split in SPLITS] if dm.tokenizer is not None else None
    path = dm.cache_path("summary", tokenized)

    return cached_json(None if path is None else path.with_name(f"{path.name}.json"), lambda: {
        "splits": {split: split_figures(dm, split) for split in SPLITS},
        "lengths": _length_rows(dm) if dm.tokenizer is not None else None})


def _tokenizer_name(tokenizer: Any) -> str:
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    path = Path(name)
    return f"{type(tokenizer).__name__} {path.parent.name}/{path.name}" if path.is_dir() else name


def summary_warnings(datamodule: DistillDataModule, figures: dict[str, Any] | None = None) -> list[str]:
    """What a researcher must not miss before training on this data (``figures``: :func:`summary_figures`)."""
    warnings = [w for stats in datamodule.splits.files.values() for w in stats.warnings]
    if datamodule.method.rationale_task and not datamodule.splits.missing_teacher:  # else the note says why
        train = (figures or summary_figures(datamodule))["splits"]["train"]
        with_rationale, rows = train["rationales"], train["rows"]
        if rows and with_rationale < LOW_RATIONALE_SHARE * rows:
            warnings.append(f"only {with_rationale} of {rows} train examples ({with_rationale / rows:.0%}) have a "
                            f"rationale: step_by_step's rationale task learns from those alone (teacher "
                            f"{datamodule.teacher}; see the parse failures above, or data.benchmark.rationale_field)")
    return warnings


def validation_note(datamodule: DistillDataModule, limit_val_batches: int | float | None) -> str | None:
    """What ``trainer.limit_val_batches`` leaves of val, in one line; None where it keeps every val batch
    (None, an int at least the number of batches, 1.0). Evaluation batches come longest first, so a
    limit validates on the longest examples only. Batches as one process counts them (Lightning's
    rule: an int caps the count, a float is a share of it)."""
    if limit_val_batches is None:
        return None
    examples = len(datamodule.examples("val"))
    batches = math.ceil(examples / datamodule.eval_batch_size)
    kept = min(batches, limit_val_batches) if isinstance(limit_val_batches, int) else int(batches * limit_val_batches)
    if kept >= batches:
        return None
    setting = f"trainer.limit_val_batches={limit_val_batches}"
    if kept <= 0:
        return f"no validation ({setting})"
    longest = min(examples, kept * datamodule.eval_batch_size)
    return (f"validation on the {longest:,} longest of {examples:,} val examples ({setting}): biased toward long "
            f"inputs; use data.val_subset=N for a fixed random subset")


def rationale_lines(datamodule: DistillDataModule, figures: dict[str, Any]) -> list[str]:
    """How many rationales each split keeps: train's from the selection over the teacher's samples
    (``data.rationales``, ``data.rationale_filter``; nothing outside the defaults), val and test as attached."""
    counts = datamodule.splits.rationale_counts.get("train")
    if not counts:
        return []
    share = "-" if counts["kept_share"] is None else f"{counts['kept_share']:.1%}"
    lines = [
        "", f"Rationales (data.rationales={counts['rationales']}, data.rationale_filter={counts['filter']}, "
            f"label_source={datamodule.label_source}):",
        f"  train: {counts['examples']} examples x {counts['samples_per_example']} teacher sample(s): "
        f"{counts['candidates']} rationales, {counts['kept']} kept ({share}), {counts['filtered']} filtered out; "
        f"{counts['label_only']} examples keep their label task alone, {counts['no_vote']} dropped without a vote; "
        f"{counts['rows']} train rows",
    ]
    for split in ("val", "test"):
        fig = figures["splits"][split]
        lines.append(f"  {split}: {fig['rationales']} of {fig['rows']} examples have a rationale (scored on gold)")
    return lines


def format_summary(datamodule: DistillDataModule) -> str:
    """A readable report of the data a run will train and evaluate on."""
    dm, splits, name, plan = datamodule, datamodule.splits, datamodule.benchmark.name, datamodule.batch_plan
    lines = [
        f"Data: {name}  teacher={dm.teacher}  label_source={dm.label_source}  targets={dm.targets}  "
        f"fraction={dm.fraction:g}  seed={dm.seed}  on_parse_failure={dm.on_parse_failure}"
        + (f"  rationales={dm.rationales}  rationale_filter={dm.rationale_filter}"
           if (dm.rationales, dm.rationale_filter) != ("first", "none") else "")
        + (f"  rationale_position={dm.rationale_position}" if dm.method.label_holds_rationale else ""),
        f"  data_dir={dm.data_dir}  global batch={dm.batch_size}  (micro, accumulate)="
        f"{(plan.micro_batch_size, plan.accumulate_grad_batches)} on {plan.world_size} process(es)",
        "",
        "Files as released (teacher label vs gold, official parsing rules):",
    ]
    file_rows = [[f"{name}_{s.file_split}", s.rows,
                  f"{dm.teacher}:missing" if s.file_split in splits.missing_teacher else s.teacher or "-",
                  *(["-", "-", "-"] if s.teacher is None else [
                      "-" if s.teacher_accuracy is None else f"{s.teacher_accuracy:.4f}", s.parse_failures,
                      s.label_space_violations])]
                 for s in splits.files.values()]
    lines += _table(["file", "rows", "teacher", "teacher_acc", "parse_failures", "outside_label_space"], file_rows)
    figures = summary_figures(dm)
    columns = ("rows", "teacher_acc", "parse_failures", "outside_label_space", "rationales", "dropped")
    lines += ["", "Splits as used:"] + _table(["split", *columns, "source"], [
        [split, *(figures["splits"][split][c] for c in columns), splits.sources.get(split, "-")] for split in SPLITS])
    if figures["lengths"] is not None:
        inputs = ("x and room for the task marker (shared input)" if dm.shared_input
                  else f"with prefix {dm.task_prefixes['label']!r}")
        lines += ["", f"Token lengths p50/p90/p99/max (tokenizer {_tokenizer_name(dm.tokenizer)}; inputs {inputs}; "
                      "(n > limit) are truncated):"]
        lines += _table(["split", "inputs", "labels", "rationales"], figures["lengths"])
    lines += rationale_lines(dm, figures)
    for file_split, note in splits.missing_teacher.items():
        users = [split for split in SPLITS if f"{name}_{file_split}" in splits.sources.get(split, "")]
        lines += ["", f"NOTE: teacher {dm.teacher} has no shards of {name}_{file_split} (split(s) {', '.join(users)} "
                      f"shown without it); a training run needs them: {note}"]
    failures = [f for stats in splits.files.values() for f in stats.failures]
    if failures:
        shown = "; ".join(failures[:3]) + ("; ..." if len(failures) > 3 else "")
        lines += ["", f"Unparsed teacher completions ({len(failures)}): {shown}"]
    for warning in summary_warnings(dm, figures):
        lines += ["", f"WARNING: {warning}"]
    return "\n".join(lines)
