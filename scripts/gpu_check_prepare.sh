#!/usr/bin/env bash
# Prepares, on a machine with PyPI, what scripts/gpu_check.sh carries to a GPU machine that has
# no internet (README.md, Speed: "GPU"): both folders are git-ignored and never committed.
#   .whl/       wheels for Python 3.12 (manylinux x86-64) of what the GPU image lacks: hydra-core,
#               omegaconf, antlr4 (built here: it is an sdist), datasets, dill, multiprocess, at the
#               versions installed here (the ones the tests ran with)
#   .gpu_data/  cqa from the official release ($DISTILL_SHARED_DATA or ../shared/datasets) and the
#               MiniLM tokenizer files (not its weights: the check's students are built from configs)
# Usage: bash scripts/gpu_check_prepare.sh [NAME==VERSION ...]   (then carry .whl and .gpu_data with the run)
#   extra NAME==VERSION wheels are carried too, e.g. pyarrow==26.0.1 if the GPU image's pyarrow is older
#   than datasets needs (gpu_check.sh stops at its import check, in seconds, if so)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DISTILL_SHARED_DATA:-../shared/datasets}
[ -d "$data/cqa" ] || { echo "gpu_check_prepare: no $data/cqa (set DISTILL_SHARED_DATA)" >&2; exit 2; }

version() { python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
rm -rf .whl && mkdir -p .whl
wheels=()
for name in hydra-core omegaconf datasets dill multiprocess; do wheels+=("$name==$(version "$name")"); done
wheels+=("$@")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${wheels[@]}"
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"

rm -rf .gpu_data && mkdir -p .gpu_data/minilm
cp -r "$data/cqa" .gpu_data/cqa && chmod -R u+w .gpu_data/cqa
python3 - <<'PY'
import shutil
from pathlib import Path

from distill.models.loaders import bundled_minilm_path

source = bundled_minilm_path()
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
    if (source / name).is_file():
        shutil.copy(source / name, Path(".gpu_data/minilm") / name)
PY
ls -la .whl
du -sh .whl .gpu_data
