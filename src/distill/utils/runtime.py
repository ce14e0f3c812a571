"""Process-level settings every entry point shares: threads, W&B mode, secret scrubbing, peak memory."""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: config keys whose values never leave the process (logs, W&B, saved configs)
SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password", "authorization")


#: how long an idle OpenMP thread spins before it sleeps (libgomp's GOMP_SPINCOUNT). Measured on a 2-core
#: AMX Xeon, MiniLM step-by-step steps (docs/speed.md): sleeping at once (OMP_WAIT_POLICY=PASSIVE)
#: 1.00 s/step alone, 1.27 beside a busy process; libgomp's default spin 0.80 alone but 7.65 beside one;
#: 3000 spins 0.82 alone, 1.44 beside one.
OPENMP_SPIN_COUNT = "3000"


def configure_openmp() -> None:
    """Idle OpenMP threads spin briefly, then sleep (:data:`OPENMP_SPIN_COUNT`), unless the environment
    says otherwise (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``). Takes effect only before torch is
    imported: the entry points call it first."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def configure_threads(threads: int | None = None) -> None:
    """OpenMP's waiting (:func:`configure_openmp`) and an optional fixed thread count. Call before
    torch does heavy work."""
    configure_openmp()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def peak_memory() -> dict[str, int]:
    """This process's peak memory so far, in bytes: ``rss`` (the resident set's high-water mark,
    from ``getrusage``) and, where CUDA was used, ``cuda`` (``torch.cuda.max_memory_allocated``)."""
    import resource  # Unix only

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = {"rss": int(rss if sys.platform == "darwin" else rss * 1024)}  # bytes on macOS, KiB on Linux
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda"] = int(torch.cuda.max_memory_allocated())
    return peak


def wandb_logged_in() -> bool:
    """True when W&B has credentials (env or netrc), so an online run will not prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str | None) -> str:
    """``auto`` means online with credentials, else offline: a run never prompts for a login."""
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return env_mode
    if mode in (None, "auto"):
        return "online" if wandb_logged_in() else "offline"
    return mode


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS) and not lowered.endswith("_env")


def scrub_secrets(value: Any) -> Any:
    """A copy of a plain config with secret-looking values replaced (``api_key_env`` names survive)."""
    if isinstance(value, Mapping):
        return {k: ("<redacted>" if is_secret_key(str(k)) and v else scrub_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return value


def find_conf_dir(required: str = "train.yaml") -> Path:
    """The project's ``conf/`` (holding ``required``): ``$DISTILL_CONF_DIR``, else ``./conf``, else the
    repository's (an editable install)."""
    candidates = [Path(os.environ["DISTILL_CONF_DIR"])] if os.environ.get("DISTILL_CONF_DIR") else []
    candidates += [Path.cwd() / "conf", Path(__file__).resolve().parents[3] / "conf"]  # src/distill/utils/ -> the repository
    for candidate in candidates:
        if (candidate / required).is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no conf/{required} in {', '.join(map(str, candidates))}: run from the repository or set DISTILL_CONF_DIR"
    )


def cache_home() -> Path:
    """Where distill keeps what it settles or converts once per machine: ``$DISTILL_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/distill``, else ``~/.cache/distill``."""
    if os.environ.get("DISTILL_CACHE_DIR"):
        return Path(os.environ["DISTILL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill"
