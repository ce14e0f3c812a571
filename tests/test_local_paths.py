"""A path that looks local and does not exist is reported as such, never handed to the hub
(whose answer, "Repo id must use alphanumeric chars", hides the typo)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distill.models.checkpoints import load_module, load_student_for_inference
from distill.utils.paths import looks_local
from distill.models.student import load_student
from train_utils import subprocess_env


@pytest.mark.parametrize("name, local", [
    ("/nonexistent", True), ("./export", True), ("../runs/x", True), ("~/models/t5", True), ("missing.ckpt", True),
    ("google/t5-v1_1-base", False), ("t5-small", False),
])
def test_what_looks_local(name, local):
    assert looks_local(name) is local


@pytest.mark.parametrize("path", ["/nonexistent", "./no/such/export", "../no-such-dir"])
def test_model_hf_with_a_missing_local_path(path):
    with pytest.raises(FileNotFoundError, match=rf"{path}: no such file or directory \(model.name_or_path\)"):
        load_student(kind="auto", name_or_path=path)


def test_predict_with_a_missing_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill.predict", str(tmp_path / "missing.ckpt"), "A shop had 69 stamps."],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert f"{tmp_path / 'missing.ckpt'}: no such file or directory" in result.stderr
    assert "Repo id" not in result.stderr and "Traceback" not in result.stderr


def test_a_relative_checkpoint_path_that_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^missing.ckpt: no such file or directory"):
        load_student_for_inference("missing.ckpt")
    with pytest.raises(FileNotFoundError, match=r"^missing.ckpt: no such file or directory"):
        load_module("missing.ckpt")


def test_conf_is_found_from_anywhere_by_an_editable_install(tmp_path, monkeypatch):
    """Outside the repository (no ./conf, no $DISTILL_CONF_DIR) the repository's conf/ is found."""
    from train_utils import REPO

    from distill.utils.runtime import find_conf_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILL_CONF_DIR", raising=False)
    assert find_conf_dir() == (REPO / "conf").resolve()
    assert find_conf_dir("summary.yaml") == (REPO / "conf").resolve()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "train.yaml").write_text("{}\n")
    assert find_conf_dir() == (tmp_path / "conf").resolve()  # ./conf comes first
    with pytest.raises(FileNotFoundError, match="no conf/nothing.yaml"):
        find_conf_dir("nothing.yaml")
