"""Telling a local path from a Hugging Face hub name, so that a missing file gets a plain error.

transformers takes any string that is not an existing directory for a hub repo id, so a mistyped
local path ends in "Repo id must use alphanumeric chars" (or a failed download). A name that looks
local (absolute, ``./``, ``../``, ``~``, or ending in ``.ckpt``) and does not exist is reported as
what it is: no such file or directory.
"""

from __future__ import annotations

from pathlib import Path

_LOCAL_PREFIXES = ("/", "./", "../", "~")


def looks_local(name: str | Path) -> bool:
    """Whether ``name`` can only mean a file or directory on this machine (never a hub repo id)."""
    text = str(name)
    return text.startswith(_LOCAL_PREFIXES) or text in (".", "..") or text.endswith(".ckpt")


def check_local_path(name: str | Path, setting: str) -> None:
    """Raise :class:`FileNotFoundError` ("PATH: no such file or directory (SETTING)") when ``name``
    looks local and does not exist; hub names and existing paths pass."""
    if looks_local(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"{name}: no such file or directory ({setting})")
