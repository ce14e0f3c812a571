"""Fetch and unpack the official release archive (``datasets.zip`` of the Distilling Step-by-Step
repository, a top-level ``datasets/`` folder with ``{name}/...`` inside) so that
``{dir}/{name}/{name}_{split}.json`` exists, the layout ``paths.data_dir`` points at. Network errors and
timeouts end in :class:`DownloadError` with the manual steps, never a hang."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["RELEASE_URL", "BENCHMARKS", "DownloadError", "download", "unpack", "manual_instructions"]

RELEASE_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"
BENCHMARKS = ("esnli", "anli1", "cqa", "svamp")


class DownloadError(RuntimeError):
    """The archive could not be fetched or unpacked; the message says what to do by hand."""


def manual_instructions(dest: Path, url: str = RELEASE_URL) -> str:
    return (f"To install the data by hand: download {url} on a machine with internet access, then\n"
            f"  unzip datasets.zip && mkdir -p {dest} && cp -r datasets/* {dest}/\n"
            f"so that {dest}/cqa/cqa_train.json exists; then run with paths.data_dir={dest} "
            f"(or export DISTILL_DATA_DIR={dest}).")


def _resolve(url: str, timeout: float) -> None:
    """Name resolution is not covered by socket timeouts; bound it so an offline machine
    without a responding resolver fails in ``timeout`` seconds instead of hanging."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise OSError(f"resolving {host} took longer than {timeout:g} s (offline?)") from None
    finally:
        pool.shutdown(wait=False)


def _fetch(url: str, target: Path, timeout: float) -> None:
    _resolve(url, timeout)
    request = urllib.request.Request(url, headers={"User-Agent": "distill-data"})
    with urllib.request.urlopen(request, timeout=timeout) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        size, done, next_report = f" of {total / 2**20:.0f} MiB" if total else "", 0, 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if done >= next_report:  # every 32 MiB
                print(f"  {done / 2**20:.0f} MiB{size}", file=sys.stderr)
                next_report = done + (32 << 20)


def unpack(archive: Path, dest: Path) -> list[str]:
    """Unpack ``archive`` into ``dest``, dropping a leading ``datasets/`` folder. Refuses
    members that would land outside ``dest``. Returns the benchmarks found."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            parts = PurePosixPath(member.filename).parts
            parts = parts[1:] if parts and parts[0] == "datasets" else parts
            if not parts or parts[0] == "__MACOSX":
                continue
            target = (dest / Path(*parts)).resolve()
            if dest not in target.parents and target != dest:
                raise DownloadError(f"{archive}: member {member.filename!r} would unpack outside {dest}")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    return [name for name in BENCHMARKS if (dest / name).is_dir()]


def download(dest: str | Path, url: str = RELEASE_URL, timeout: float = 30.0) -> list[str]:
    """Download the release archive and unpack it into ``dest``; returns the benchmarks found."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ".datasets.zip.part"
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    try:
        _fetch(url, archive, timeout)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        archive.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}\n{manual_instructions(dest, url)}") from err
    try:
        found = unpack(archive, dest)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{url} did not return a zip archive ({err})\n{manual_instructions(dest, url)}") from err
    finally:
        archive.unlink(missing_ok=True)
    if not found:
        raise DownloadError(f"{url} unpacked, but no benchmark folder ({', '.join(BENCHMARKS)}) appeared in {dest}")
    return found
