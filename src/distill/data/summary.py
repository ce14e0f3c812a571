"""The data summary (docs/data.md): :func:`format_summary`, printed at the start of a run and by
``python -m distill.data summary``: the files as released (rows, teacher accuracy, parse failures, labels
outside the label space), the splits as trained, token lengths against the configured limits, and
warnings (teacher labels at chance, step_by_step with rationales on under :data:`LOW_RATIONALE_SHARE` of
train). A report, not a training run: a train file without the teacher's shards shows ``TEACHER:missing``."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.data.cache import cached_json
from distill.data.encoding import target_text
from distill.data.splits import SPLITS

if TYPE_CHECKING:
    from distill.data.datamodule import DistillDataModule

__all__ = [
    "format_summary",
    "length_stats",
    "split_figures",
    "summary_figures",
    "summary_warnings",
    "validation_note",
    "LOW_RATIONALE_SHARE",
]

#: step_by_step with rationales on fewer train examples than this share is warned about
LOW_RATIONALE_SHARE = 0.5


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def _rate(num: int, den: int) -> str:
    return f"{num / den:.4f}" if den else "-"


def length_stats(lengths: Sequence[int], limit: int | None = None) -> str:
    """``p50/p90/p99/max`` of token lengths, plus how many exceed ``limit``."""
    if not lengths:
        return "-"
    arr = np.asarray(lengths)
    p50, p90, p99 = (int(round(float(np.percentile(arr, q)))) for q in (50, 90, 99))
    text = f"{p50}/{p90}/{p99}/{int(arr.max())}"
    if limit is not None:
        over = int((arr > limit).sum())
        text += f" ({over} > {limit})" if over else ""
    return text


def split_figures(datamodule: DistillDataModule, split: str) -> dict[str, Any]:
    """Teacher figures over the examples a split holds (dropped ones count as parse failures)."""
    benchmark = datamodule.benchmark
    dropped = datamodule.splits.dropped.get(split, 0)
    rows = failures = parsed = correct = outside = rationales = 0
    for e in datamodule.examples(split):  # one pass: a split may be read back from the cache
        rows += 1
        failures += e.teacher_error is not None
        rationales += e.rationale is not None
        if e.teacher_label is not None:
            parsed += 1
            correct += e.gold is not None and benchmark.score(e.teacher_label, e.gold)
            outside += not benchmark.label_fits(e.teacher_label, e)
    failures += dropped
    has_teacher = parsed > 0 or failures > 0
    total = rows + dropped
    return {
        "rows": rows,
        "rationales": rationales,
        "dropped": dropped,
        # the teacher's own accuracy against gold (an unparsed completion counts as wrong); None: no teacher
        "teacher_accuracy": correct / total if has_teacher and total else None,
        "teacher_acc": _rate(correct, total) if has_teacher else "-",
        "parse_failures": failures if has_teacher else "-",
        "outside_label_space": outside if has_teacher else "-",
    }


#: texts tokenized at once for the length figures (the token ids of a whole split would not fit in memory)
_LENGTH_CHUNK = 10_000


def _length_counter(tokenizer: Any) -> Any:
    """A function ``(texts, special) -> token counts`` of ``tokenizer`` without truncation or padding: a fast
    tokenizer's Rust backend (a copy, so the tokenizer's own settings stay), which skips building the
    Python encodings, else the tokenizer itself."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        from tokenizers import Tokenizer

        counter = Tokenizer.from_str(backend.to_str())
        counter.no_truncation()
        counter.no_padding()
        return lambda texts, special: [len(e.ids) for e in counter.encode_batch_fast(texts, add_special_tokens=special)]
    return lambda texts, special: [
        len(ids)
        for ids in tokenizer(
            texts, add_special_tokens=special, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
    ]


def _token_lengths(tokenizer: Any, texts: Sequence[str], special: bool, counter: Any = None) -> list[int]:
    count = counter or _length_counter(tokenizer)
    lengths: list[int] = []
    for start in range(0, len(texts), _LENGTH_CHUNK):
        # targets get eos appended by the encoder
        lengths += [n + (0 if special else 1) for n in count(list(texts[start : start + _LENGTH_CHUNK]), special)]
    return lengths


def _length_rows(dm: DistillDataModule) -> list[list[str]]:
    prefix = dm.task_prefixes["label"]
    label_limit = dm.max_target_length + (dm.max_rationale_length if dm.targets == "single_task" else 0)
    counter = _length_counter(dm.tokenizer)
    rows = []
    for split in SPLITS:
        inputs: list[str] = []
        targets: list[str] = []
        rationales: list[str] = []
        source = dm.label_source if split == "train" else "gold"
        for e in dm.examples(split):
            inputs.append(prefix + e.input)
            target = target_text(e, dm.targets, source, dm.rationale_position)
            if target is not None:
                targets.append(target)
            if e.rationale is not None:
                rationales.append(e.rationale)
        rows.append(
            [
                split,
                length_stats(_token_lengths(dm.tokenizer, inputs, True, counter), dm.max_input_length),
                length_stats(_token_lengths(dm.tokenizer, targets, False, counter), label_limit),
                length_stats(_token_lengths(dm.tokenizer, rationales, False, counter), dm.max_rationale_length),
            ]
        )
    return rows


def summary_figures(datamodule: DistillDataModule) -> dict[str, Any]:
    """The figures the summary computes from the examples: :func:`split_figures` per split and the
    token-length rows (with a tokenizer). Computed once per data version, tokenizer and settings
    when the data module has a cache (``cache_dir``), read from there afterwards."""
    dm = datamodule
    settings = [dm.targets, dm.label_source, dm.task_prefixes["label"], dm.max_input_length, dm.max_target_length,
                dm.max_rationale_length, dm.tokenizer_hash if dm.tokenizer is not None else None]
    if dm.targets == "single_task" and dm.rationale_position != "before":
        settings.append(dm.rationale_position)
    key = hashlib.sha256(json.dumps([dm.data_version, settings]).encode()).hexdigest()[:40]

    def compute() -> dict[str, Any]:
        return {
            "splits": {split: split_figures(dm, split) for split in SPLITS},
            "lengths": _length_rows(dm) if dm.tokenizer is not None else None,
        }

    return cached_json(dm.cache_path(f"summary-{key}.json"), compute)


def _tokenizer_name(tokenizer: Any) -> str:
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    path = Path(name)
    return f"{type(tokenizer).__name__} {path.parent.name}/{path.name}" if path.is_dir() else name


def summary_warnings(datamodule: DistillDataModule, figures: dict[str, Any] | None = None) -> list[str]:
    """What a researcher must not miss before training on this data (``figures``: :func:`summary_figures`)."""
    warnings = [w for stats in datamodule.splits.files.values() for w in stats.warnings]
    if datamodule.targets == "step_by_step" and not datamodule.splits.missing_teacher:  # else the note says why
        train = (figures or summary_figures(datamodule))["splits"]["train"]
        with_rationale, rows = train["rationales"], train["rows"]
        if rows and with_rationale < LOW_RATIONALE_SHARE * rows:
            warnings.append(
                f"only {with_rationale} of {rows} train examples ({with_rationale / rows:.0%}) have a "
                f"rationale: step_by_step's rationale task learns from those alone (teacher {datamodule.teacher}; "
                f"see the parse failures above, or data.benchmark.rationale_field)"
            )
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
    return (
        f"validation on the {longest:,} longest of {examples:,} val examples ({setting}): biased toward long "
        f"inputs; use data.val_subset=N for a fixed random subset"
    )


def rationale_lines(datamodule: DistillDataModule) -> list[str]:
    """How many rationales each split keeps: train's from the selection over the teacher's samples
    (``data.rationales``, ``data.rationale_filter``; nothing outside the defaults), val and test as attached."""
    counts = datamodule.splits.rationale_counts.get("train")
    if not counts:
        return []
    share = "-" if counts["kept_share"] is None else f"{counts['kept_share']:.1%}"
    lines = [
        "",
        f"Rationales (data.rationales={counts['rationales']}, data.rationale_filter={counts['filter']}, "
        f"label_source={datamodule.label_source}):",
        f"  train: {counts['examples']} examples x {counts['samples_per_example']} teacher sample(s): "
        f"{counts['candidates']} rationales, {counts['kept']} kept ({share}), {counts['filtered']} filtered out; "
        f"{counts['label_only']} examples keep their label task alone, {counts['no_vote']} dropped without a vote; "
        f"{counts['rows']} train rows",
    ]
    for split in ("val", "test"):
        examples = datamodule.examples(split)
        with_rationale = sum(e.rationale is not None for e in examples)
        lines.append(f"  {split}: {with_rationale} of {len(examples)} examples have a rationale (scored on gold)")
    return lines


def format_summary(datamodule: DistillDataModule) -> str:
    """A readable report of the data a run will train and evaluate on."""
    dm = datamodule
    splits = dm.splits
    name = dm.benchmark.name
    plan = dm.batch_plan
    lines = [
        f"Data: {name}  teacher={dm.teacher}  label_source={dm.label_source}  targets={dm.targets}  "
        f"fraction={dm.fraction:g}  seed={dm.seed}  on_parse_failure={dm.on_parse_failure}"
        + (f"  rationales={dm.rationales}  rationale_filter={dm.rationale_filter}"
           if (dm.rationales, dm.rationale_filter) != ("first", "none") else "")
        + (f"  rationale_position={dm.rationale_position}" if dm.targets == "single_task" else ""),
        f"  data_dir={dm.data_dir}  global batch={dm.batch_size}  (micro, accumulate)="
        f"{(plan.micro_batch_size, plan.accumulate_grad_batches)} on {plan.world_size} process(es)",
        "",
        "Files as released (teacher label vs gold, official parsing rules):",
    ]
    file_rows = []
    for stats in splits.files.values():
        has_teacher = stats.teacher is not None
        lacking = stats.file_split in splits.missing_teacher
        file_rows.append(
            [
                f"{name}_{stats.file_split}",
                stats.rows,
                f"{dm.teacher}:missing" if lacking else stats.teacher or "-",
                f"{stats.teacher_accuracy:.4f}" if has_teacher and stats.teacher_accuracy is not None else "-",
                stats.parse_failures if has_teacher else "-",
                stats.label_space_violations if has_teacher else "-",
            ]
        )
    lines += _table(["file", "rows", "teacher", "teacher_acc", "parse_failures", "outside_label_space"], file_rows)

    lines += ["", "Splits as used:"]
    split_rows = []
    figures = summary_figures(dm)
    for split in SPLITS:
        fig = figures["splits"][split]
        split_rows.append(
            [
                split,
                fig["rows"],
                fig["teacher_acc"],
                fig["parse_failures"],
                fig["outside_label_space"],
                fig["rationales"],
                fig["dropped"],
                splits.sources.get(split, "-"),
            ]
        )
    lines += _table(
        ["split", "rows", "teacher_acc", "parse_failures", "outside_label_space", "rationales", "dropped", "source"],
        split_rows,
    )

    if figures["lengths"] is not None:
        lines += [
            "",
            f"Token lengths p50/p90/p99/max (tokenizer {_tokenizer_name(dm.tokenizer)}; "
            f"inputs with prefix {dm.task_prefixes['label']!r}; (n > limit) are truncated):",
        ]
        length_rows = figures["lengths"]
        lines += _table(["split", "inputs", "labels", "rationales"], length_rows)
    lines += rationale_lines(dm)
    for file_split, note in splits.missing_teacher.items():
        users = [split for split in SPLITS if f"{name}_{file_split}" in splits.sources.get(split, "")]
        lines += [
            "",
            f"NOTE: teacher {dm.teacher} has no shards of {name}_{file_split} (split(s) {', '.join(users)} shown "
            f"without it); a training run needs them: {note}",
        ]
    failures = [f for stats in splits.files.values() for f in stats.failures]
    if failures:
        shown = "; ".join(failures[:3]) + ("; ..." if len(failures) > 3 else "")
        lines += ["", f"Unparsed teacher completions ({len(failures)}): {shown}"]
    for warning in summary_warnings(dm, figures):
        lines += ["", f"WARNING: {warning}"]
    return "\n".join(lines)
