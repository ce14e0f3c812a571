"""Export a trained student to a directory plain transformers loads.

    python -m distill.export CKPT OUT_DIR

``AutoModelForSeq2SeqLM.from_pretrained(OUT_DIR)`` (a seq2seq student) or
``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` (a decoder-only one; its tokenizer pads on the
left) then gives the same predictions. A LoRA student is exported with its adapter merged into
the weights: a plain model, no peft needed. ``distill.json`` beside the weights keeps the kind,
task prefixes and generation lengths (``distill.predict`` reads it).
"""

from __future__ import annotations

import argparse
import sys

from distill.utils.runtime import configure_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a Lightning checkpoint (.ckpt) written by train.py")
    parser.add_argument("out_dir", help="directory to write (created if missing)")
    parser.add_argument("--precision", default=None, help="record this precision for generation (32-true, "
                        "bf16-mixed, ...) in distill.json instead of the one the student was trained and tested in")
    args = parser.parse_args(argv)
    configure_threads()

    from distill.models.checkpoints import auto_class_name, export_student, load_module

    try:
        module = load_module(args.checkpoint)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    module.settings = module.settings.in_precision(args.precision)
    out = export_student(module, args.out_dir)
    print(f"exported to {out}  (load with transformers.{auto_class_name(out)}.from_pretrained({str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
