"""Predict labels (and rationales) for raw inputs with a trained student.

    python -m distill.predict CKPT_OR_EXPORT_DIR "input one" "input two" [--rationale]
    python -m distill.predict CKPT_OR_EXPORT_DIR --file inputs.txt > predictions.jsonl

One JSON object per input on stdout: {"input", "prediction"[, "rationale"]}, from a seq2seq or a
decoder-only student (an exported one loaded as its distill.json, or else its config, says).
"""

from __future__ import annotations

import argparse
import json
import sys

from distill.utils.runtime import configure_openmp, configure_threads

configure_openmp()  # before torch is imported

from distill.models.checkpoints import load_student_for_inference  # noqa: E402
from distill.models.inference import predict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.predict", description=__doc__.split("\n")[0])
    parser.add_argument("student", help="a Lightning checkpoint (.ckpt) or a directory written by distill.export "
                        "(seq2seq or causal; loaded with AutoModelForSeq2SeqLM or AutoModelForCausalLM)")
    parser.add_argument("inputs", nargs="*", help="input texts (as the benchmark writes them, without a prefix)")
    parser.add_argument("--file", help="read inputs from this file, one per line ('-' for stdin)")
    parser.add_argument("--rationale", action="store_true", help="also generate a rationale per input")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default=None, help="decode in this precision (32-true, bf16-mixed, ...) "
                        "instead of the one the student was trained and tested in")
    args = parser.parse_args(argv)
    configure_threads()
    inputs = list(args.inputs)
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            inputs += [line.rstrip("\n") for line in stream if line.strip()]
    if not inputs:
        parser.error("no inputs: give texts as arguments or --file")
    try:
        model, tokenizer, settings = load_student_for_inference(args.student)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = settings.in_precision(args.precision)
    for record in predict(model, tokenizer, settings, inputs, args.rationale, args.batch_size):
        print(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
