"""Trained students out of their runs: load a checkpoint, export it for plain transformers."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from distill.local_paths import check_local_path
from distill.models.inference import InferenceSettings
from distill.models.module import DistillModule


def load_module(ckpt_path: str | Path) -> DistillModule:
    """A DistillModule from a Lightning checkpoint: the student rebuilds from the spec saved in it."""
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (a checkpoint written by train.py)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: is a directory, not a checkpoint file")
    return DistillModule.load_from_checkpoint(str(path), map_location="cpu")


def run_config_of(ckpt_path: str | Path) -> DictConfig | None:
    """The Hydra config of the run a checkpoint came from (``<run>/checkpoints/x.ckpt`` -> ``<run>/.hydra``)."""
    config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else None


def export_student(module: DistillModule, out_dir: str | Path) -> Path:
    """``save_pretrained`` the student and its tokenizer, plus ``distill.json`` (prefixes, lengths, method)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module.model.save_pretrained(out)
    module.tokenizer.save_pretrained(out)
    module.settings.save(out)
    return out


def load_student_for_inference(
    path: str | Path,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, InferenceSettings]:
    """From a ``.ckpt`` file or an exported directory."""
    check_local_path(path, "a checkpoint or a directory written by distill.export")
    path = Path(path)
    if path.is_file():
        module = load_module(path)
        return module.model, module.tokenizer, module.settings
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token
    return model, tokenizer, InferenceSettings.load(path)
