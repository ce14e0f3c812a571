"""Export a trained student to a directory plain transformers loads.

    python -m distill.export CKPT OUT_DIR

``AutoModelForSeq2SeqLM`` or (decoder-only, its tokenizer padding on the left) ``AutoModelForCausalLM``
``.from_pretrained(OUT_DIR)`` then gives the same predictions; a LoRA adapter is merged into the weights (no
peft needed). ``distill.json`` keeps the kind, task prefixes and generation lengths (``distill.predict`` reads
it); ``README.md`` is the model card, with the run's figures where its run left a ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from distill.utils.runtime import configure_openmp, configure_threads

configure_openmp()  # before torch is imported

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from distill.models.checkpoints import auto_class_name, export_student, load_module, run_config_of  # noqa: E402


def run_record(ckpt: str | Path) -> dict[str, Any] | None:
    """The ``results.json`` of the run a checkpoint came from (``<run>/checkpoints/x.ckpt``), None
    without one; plus ``teacher`` (the run's ``data.teacher``) where its Hydra config is there, and
    ``tested``: whether this checkpoint is the one the run tested (its best, or one at the same step)."""
    path = Path(ckpt).resolve()
    results = path.parent.parent / "results.json"
    if not results.is_file():
        return None
    run = json.loads(results.read_text())
    config = run_config_of(path)
    if config is not None:
        run["teacher"] = OmegaConf.select(config, "data.teacher", throw_on_resolution_failure=False)
    best = path.parent / Path(run["best_checkpoint"]).name if run.get("best_checkpoint") else None
    run["tested"] = best is not None and (best.name == path.name or (best.is_file() and _step(best) == _step(path)))
    return run


def _step(ckpt: Path) -> int | None:
    return torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("global_step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a Lightning checkpoint (.ckpt) written by train.py")
    parser.add_argument("out_dir", help="directory to write (created if missing)")
    parser.add_argument("--precision", default=None, help="record this precision for generation (32-true, "
                        "bf16-mixed, ...) in distill.json instead of the one the student was trained and tested in")
    args = parser.parse_args(argv)
    configure_threads()
    try:
        module = load_module(args.checkpoint)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    module.settings = module.settings.in_precision(args.precision)
    out = export_student(module, args.out_dir, run_record(args.checkpoint))
    print(f"exported to {out}  (load with transformers.{auto_class_name(out)}.from_pretrained({str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
