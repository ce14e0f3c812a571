"""``python -m distill.data``: fetch the release, or summarise a benchmark before training.

    python -m distill.data download [--dir DIR] [--url URL] [--timeout SECONDS]
    python -m distill.data summary data=NAME [paths.data_dir=DIR] [data.KEY=VALUE ...] [tokenizer=NAME_OR_PATH]

``summary`` composes ``conf/summary.yaml`` (groups ``paths``, ``data``, ``method``) with the
overrides given, like train.py would, and prints :func:`distill.data.summary.format_summary`.
The tokenizer defaults to the offline MiniLM (eos = [SEP]).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["compose_summary_config", "main"]


def compose_summary_config(overrides: list[str]) -> Any:
    import distill  # noqa: F401  (registers the project's OmegaConf resolvers)
    from hydra import compose, initialize_config_dir

    from distill.utils.runtime import find_conf_dir

    with initialize_config_dir(config_dir=str(find_conf_dir("summary.yaml")), version_base="1.3"):
        return compose(config_name="summary", overrides=overrides)


def _summary(overrides: list[str]) -> int:
    from hydra.utils import instantiate

    from distill.benchmarks.base import DataError
    from distill.data.summary import format_summary
    from distill.models.loaders import minilm_tokenizer

    cfg = compose_summary_config(overrides)
    tokenizer = minilm_tokenizer(cfg.get("tokenizer"))  # any Hugging Face tokenizer; eos and pad filled in
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:  # a report, not a training run: splits the teacher has no shards of are marked, not refused
        print(format_summary(instantiate(cfg.data, tokenizer=tokenizer, require_teacher=False)))
    except DataError as err:
        print(f"data error: {err}", file=sys.stderr)
        return 2
    return 0


def _download(args: list[str]) -> int:
    from distill.data.download import RELEASE_URL, DownloadError, download

    parser = argparse.ArgumentParser(prog="python -m distill.data download")
    parser.add_argument("--dir", default=os.environ.get("DISTILL_DATA_DIR", "data"),
                        help="data directory (default: $DISTILL_DATA_DIR or ./data)")
    parser.add_argument("--url", default=RELEASE_URL)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds without progress before giving up")
    ns = parser.parse_args(args)
    try:
        found = download(ns.dir, ns.url, ns.timeout)
    except DownloadError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"unpacked {', '.join(found)} into {ns.dir}; use paths.data_dir={ns.dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("download", "summary"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return _download(argv[1:]) if argv[0] == "download" else _summary(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
