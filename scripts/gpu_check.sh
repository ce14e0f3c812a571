#!/usr/bin/env bash
# The GPU check of issue 17 (at most 8 minutes on one H200): python -m distill.bench on the
# T5-base-shaped student of README.md's Speed section and on a SmolLM2-shaped causal student, each
# plain vs fast vs fast with one pass over the input, written under $OUT (default ./gpu_check_out):
# gpu_check.txt (the tables), results.json, runs.log, nvidia-smi.txt, versions.txt.
#   here:  bash scripts/gpu_check_prepare.sh       (wheels into .whl/, cqa and the tokenizer into .gpu_data/)
#   there: bash scripts/gpu_check.sh               (carrying .whl and .gpu_data)
# GPU_CHECK_SMOKE=1 runs the same on this CPU with tiny students, one step each (the script's test);
# it takes the installed packages and, without .gpu_data/, the release files and the bundled tokenizer.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
started=$(date +%s)

if [ "${GPU_CHECK_SMOKE:-0}" != 1 ]; then
  [ -d .gpu_data/cqa ] || { echo "gpu_check: no .gpu_data/cqa: run scripts/gpu_check_prepare.sh first and carry .gpu_data" >&2; exit 2; }
  if [ -d .whl ]; then  # what the GPU image lacks (hydra-core, omegaconf, datasets, ...), carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
else
  data=${DISTILL_SHARED_DATA:-../shared/datasets}
  [ -d .gpu_data/cqa ] || export GPU_CHECK_DATA=${GPU_CHECK_DATA:-$data}
  [ -d .gpu_data/minilm ] || export GPU_CHECK_TOKENIZER=${GPU_CHECK_TOKENIZER:-$(python3 -c \
    "from distill.models.loaders import bundled_minilm_path; print(bundled_minilm_path())")}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
# the probes' and the tokenized data's cache: this check's own, not the machine's
export DISTILL_CACHE_DIR=${DISTILL_CACHE_DIR:-/tmp/distill-gpu-check-cache}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

{ nvidia-smi || echo "nvidia-smi: not here"; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null; } \
  > "$OUT/nvidia-smi.txt" 2>&1
python3 - > "$OUT/versions.txt" 2>&1 <<'PY'
import importlib.metadata as metadata, platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
for name in ("transformers", "pytorch-lightning", "lightning", "peft", "hydra-core", "omegaconf", "datasets", "tokenizers"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
PY
echo "gpu_check: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')" > "$OUT/gpu_check.txt"
cat "$OUT/versions.txt" >> "$OUT/gpu_check.txt"
# everything a run imports, before any run: a missing or mismatched package fails here, in seconds
if ! python3 -c "import hydra, omegaconf, datasets, distill.bench, distill.training" >> "$OUT/gpu_check.txt" 2>&1; then
  echo "gpu_check: the imports failed (see $OUT/gpu_check.txt); carry the missing wheels:" \
       "bash scripts/gpu_check_prepare.sh NAME==VERSION ..." | tee -a "$OUT/gpu_check.txt" >&2
  exit 2
fi

python3 scripts/gpu_check.py
status=$?
echo "gpu_check: $(( $(date +%s) - started )) s in all, exit $status" | tee -a "$OUT/gpu_check.txt"
exit $status
