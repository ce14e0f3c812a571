"""The model card (``README.md``) :func:`distill.models.checkpoints.export_student` writes beside a student:
Hub metadata (base model, pipeline, tags, benchmark, test accuracy), what the student is, its run,
and a plain-transformers snippet that prompts it in the layout it was trained in."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill.models.inference import task_inputs
from distill.models.module import DistillModule
from distill.models.student import CAUSAL

PAPER = "[Distilling Step-by-Step](https://arxiv.org/abs/2305.02301)"
#: the pretrained weights a student kind starts from when ``name_or_path`` does not name them
BUNDLED = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
#: ``data.teacher`` directories with a longer name
TEACHERS = {"llm": "PaLM 540B (`llm`: the paper's released outputs)"}
AUTOCAST = {"bf16-mixed": "torch.bfloat16", "16-mixed": "torch.float16"}
EXAMPLE = "A shop had 69 stamps. It sold 21 of them. How many stamps does the shop have left?"


def write_model_card(out_dir: str | Path, module: DistillModule, run: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/README.md`` for the student of ``module`` exported there; returns its path. ``run``:
    the run's ``results.json`` (None: no benchmark, no numbers), with ``teacher`` (its ``data.teacher``) and
    ``tested`` (False: the run tested another checkpoint, whose figures the card names as such)."""
    run = run or {}
    config, metrics = run.get("config", {}), run.get("metrics", {})
    hp, settings = module.hparams, module.settings
    method, benchmark = settings.method, config.get("benchmark")
    pipeline = "text-generation" if settings.kind == CAUSAL else "text2text-generation"
    name = "-".join(str(p) for p in (hp["model"].get("short_name"), method, benchmark) if p)
    accuracy, tested = metrics.get("test/acc"), run.get("tested", True)
    indexed = tested and benchmark and accuracy is not None and math.isfinite(accuracy)
    data = ModelCardData(
        base_model=_base_model(hp["model"]), library_name="transformers", pipeline_tag=pipeline, model_name=name,
        tags=["distill", "distilling-step-by-step", method, *([benchmark] if benchmark else [])],
        datasets=[benchmark] if benchmark else None, metrics=["accuracy"],
        eval_results=[EvalResult(task_type=pipeline, dataset_type=benchmark, dataset_name=benchmark, dataset_split="test",
                                 metric_type="accuracy", metric_value=accuracy)] if indexed else None,
    )
    body = "\n".join([
        f"# {name}", "",
        _what(module, config.get("label_source"), benchmark), "",
        "| | |", "|---|---|",
        *(f"| {key} | {value} |" for key, value in _rows(module, run, tested) if value is not None), "",
        "## Use", "", "```python", _snippet(module, Path(out_dir)), "```", "",
    ])
    path = Path(out_dir) / "README.md"
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(path)
    return path


def _base_model(spec: dict[str, Any]) -> str | None:
    """The Hub name of the student's pretrained weights; None for random ones (``tiny``) or a local directory."""
    kind, name = spec.get("kind"), spec.get("name_or_path")
    if kind == "smollm2" or not name:  # smollm2's name_or_path is its local conversion
        return BUNDLED.get(kind)
    hub_like = re.fullmatch(r"[\w-][\w.-]*(/[\w.-]+)?", str(name)) is not None
    return str(name) if hub_like and not Path(str(name)).expanduser().exists() else None


def _what(module: DistillModule, label_source: str | None, benchmark: str | None) -> str:
    model, spec = module.model, module.settings.method_spec
    params = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)  # LoRA: merged on export
    student = f"A {module.settings.kind} student ({model.config.model_type}, {params / 1e6:.1f}M parameters)"
    on = f" on {benchmark}" if benchmark else ""
    labels = {"gold": "gold labels", "teacher": "the teacher's labels", "teacher_vote": "the teacher's majority labels"}
    labels_of = labels.get(label_source or "", "labels")
    if spec.rationale_task:
        return (f"{student} distilled with {PAPER}{on}: trained on {labels_of} and, as a second task sharing "
                "all weights, on the teacher's rationales. Asked for the label, it writes the label alone.")
    if spec.label_holds_rationale:
        return (f"{student} trained{on} as the single-task baseline of {PAPER}: one target, the teacher's "
                f"rationale and then the label ({labels_of}), written out together.")
    kind = "standard distillation" if (label_source or "").startswith("teacher") else "standard finetuning"
    return f"{student} trained{on} on {labels_of} alone: the {kind} baseline of {PAPER}."


def _rows(module: DistillModule, run: dict[str, Any], tested: bool) -> list[tuple[str, Any]]:
    """``(field, value)`` of the run table; a None value is not known and is left out."""
    config, metrics, hp, settings = run.get("config", {}), run.get("metrics", {}), module.hparams, module.settings
    alpha, weight = config.get("alpha", hp.get("alpha")), config.get("rationale_weight", hp.get("rationale_weight"))
    weight = f"α = {alpha}" if alpha is not None else f"λ = {weight}" if settings.method_spec.rationale_task else ""
    uses_teacher = settings.method_spec.needs_rationales or str(config.get("label_source")).startswith("teacher")
    teacher = run.get("teacher") if uses_teacher else None
    trained, generates = config.get("precision"), settings.precision
    precision = generates if trained in (None, generates) else f"{trained} (generates in {generates})"
    layout = "shared input: x, then the task marker" if settings.shared_input else "task prefix, then x"
    return [
        ("benchmark", config.get("benchmark")),
        ("method", f"{settings.method} ({weight})" if weight else settings.method),
        ("input layout", layout),
        ("label source", config.get("label_source")),
        ("teacher", TEACHERS.get(teacher, teacher)),
        ("train fraction", config.get("fraction")),
        ("seed", config.get("seed")),
        ("precision", precision),
        ("optimizer steps", run.get("global_step")),
        ("test accuracy", _accuracy(run, metrics, tested)),
    ]


def _accuracy(run: dict[str, Any], metrics: dict[str, Any], tested: bool) -> str | None:
    if metrics.get("test/acc") is None:
        return None
    figures = f"{metrics['test/acc']:.4f}"
    extra = [f"{label} {metrics[key]:.4f}" for key, label in
             (("test/majority_baseline", "majority class"), ("test/teacher_acc", "teacher")) if metrics.get(key) is not None]
    figures += f" ({', '.join(extra)})" if extra else ""
    if tested:
        return figures
    best = Path(run["best_checkpoint"]).name if run.get("best_checkpoint") else None
    return "not measured on this checkpoint" + (f" (the run tested `{best}`: {figures})" if best else "")


def _snippet(module: DistillModule, out: Path) -> str:
    """Python that loads the export with plain transformers and prints its label for ``text``,
    prompted as :func:`distill.models.inference.predict` prompts it."""
    settings, causal = module.settings, module.settings.kind == CAUSAL
    _, marker, limit = task_inputs(settings, module.tokenizer, "label")
    auto = "AutoModelForCausalLM" if causal else "AutoModelForSeq2SeqLM"
    prompt = "text" if marker is not None else f"{settings.label_prefix!r} + text"
    lines = [
        "import torch",
        f"from transformers import {auto}, AutoTokenizer",
        "",
        f"path = {str(out)!r}  # this folder, or the Hub repo it is uploaded to",
        f"text = {EXAMPLE!r}",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        f"model = {auto}.from_pretrained(path).eval()",
        f'inputs = tokenizer([{prompt}], truncation=True, max_length={limit}, return_tensors="pt")',
    ]
    decoder, output = "", 'out[0, inputs["input_ids"].shape[1]:]' if causal else "out[0]"
    if marker is not None:
        lines.append(f'marker = tokenizer([{settings.label_prefix!r}], add_special_tokens=False, return_tensors="pt")["input_ids"]')
        if causal:
            lines += ["# the shared-input layout: x, then the label marker",
                      'inputs = {"input_ids": torch.cat([inputs["input_ids"], marker], 1),',
                      '          "attention_mask": torch.cat([inputs["attention_mask"], torch.ones_like(marker)], 1)}']
        else:
            lines += ["# the shared-input layout: the encoder reads x; the decoder starts with its start token, then the marker",
                      "decoder = model.prepare_decoder_input_ids_from_labels(labels=torch.nn.functional.pad(marker, (0, 1)))"]
            decoder, output = ", decoder_input_ids=decoder", "out[0, decoder.shape[1]:]"
    autocast = AUTOCAST.get(settings.precision)
    context = f'torch.no_grad(), torch.autocast("cpu", dtype={autocast})' if autocast else "torch.no_grad()"
    lines += [
        f"with {context}:  # the precision it was tested in",
        f'    out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]{decoder},',
        f"                         max_new_tokens={settings.label_max_new_tokens}, num_beams=1, do_sample=False,"
        " pad_token_id=tokenizer.pad_token_id)",
        f"print(tokenizer.decode({output}, skip_special_tokens=True).strip())",
    ]
    if settings.method_spec.rationale_task:
        lines.append(f"# {settings.rationale_prefix!r} in place of {settings.label_prefix!r} asks for its rationale "
                     f"(max_new_tokens={settings.rationale_max_new_tokens})")
    elif settings.method_spec.label_holds_rationale:
        lines.append(f"# it writes the rationale and the label in one text (the rationale {settings.rationale_position} the label)")
    return "\n".join(lines)
