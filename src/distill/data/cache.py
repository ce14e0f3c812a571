"""What is built from the data, on disk, keyed by the data's version (docs/data.md): :func:`data_version`
(the files' sizes and mtimes, the settings that choose examples, the benchmark's configuration, the parser's
source; benchmarks made in code have none). Every cache of derived data (parsed files, splits, tokenized
splits, the summary's figures) lives at :func:`cache_path` of its version and whatever else decides it.
Splits are stored as Arrow (:func:`save_splits`, read back memory-mapped: :class:`ExampleTable`), atomically
(a directory renamed into place), so concurrent runs never read half a cache."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.benchmarks.base import Benchmark, Example
from distill.benchmarks.io import shard_glob
from distill.data.files import FileStats, load_file, reads_files
from distill.data.splits import SPLITS, Splits

__all__ = ["CACHE_VERSION", "ExampleTable", "cache_path", "cached_file_loader", "cached_json", "data_version",
           "load_splits", "save_splits"]

#: bump when what is stored changes
CACHE_VERSION = 1
#: the modules whose code decides what the examples hold (besides the benchmark's own classes)
_PARSING_MODULES = ("distill.data.splits", "distill.data.files", "distill.data.rationales", "distill.teacher.vote",
                    "distill.benchmarks.io", "distill.benchmarks.base")
_COLUMNS = ("uid", "input", "gold", "teacher_label", "rationale", "teacher_error", "record")


def _code_digest(benchmark: Benchmark) -> str:
    digest = hashlib.sha256()
    files = set()
    for cls in type(benchmark).__mro__:
        try:
            files.add(inspect.getsourcefile(cls))
        except TypeError:  # built-in classes (object) have no source
            pass
    files |= {sys.modules[name].__file__ for name in _PARSING_MODULES if name in sys.modules}
    for path in sorted(f for f in files if f):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def data_version(benchmark: Benchmark, data_dir: str | Path, teacher: str | None, settings: Any,
                 file_split: str | None = None) -> str | None:
    """The version of what is read from these files (all of the benchmark's, or ``file_split``'s) with these
    settings (see the module doc); None for a benchmark made in code, or one whose configuration cannot be
    hashed."""
    if not reads_files(benchmark):
        return None
    from datasets.fingerprint import Hasher

    try:
        configuration = Hasher.hash(benchmark)
    except Exception:  # noqa: BLE001 - a benchmark holding something unpicklable is simply not cached
        return None
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, teacher, settings], sort_keys=True, default=str).encode())
    digest.update(configuration.encode())
    digest.update(_code_digest(benchmark).encode())
    directory = Path(data_dir) / benchmark.name
    split = "*" if file_split is None else file_split
    files = sorted(directory.glob(f"{benchmark.name}_{split}.json"))
    if teacher is not None:
        files += sorted((directory / teacher).glob(shard_glob(split)))
        files += sorted((directory / teacher / "samples").glob(f"*/{shard_glob(split)}"))  # teacher.samples=k
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:40]


def cache_path(cache_dir: str | Path | None, benchmark: str, kind: str, version: str | None,
               *parts: Any) -> Path | None:
    """``cache_dir/{benchmark}/{kind}-{key}``: where data of ``kind`` derived from ``version``
    (:func:`data_version`) and ``parts`` (whatever else decides it, as JSON: the
    tokenizer, settings) is stored; None (nothing is cached) without a cache_dir or a version."""
    if cache_dir is None or version is None:
        return None
    key = hashlib.sha256(json.dumps([version, *parts], sort_keys=True, default=str).encode()).hexdigest()[:40]
    return Path(cache_dir) / benchmark / f"{kind}-{key}"


class _Record(Mapping[str, Any]):
    """A raw record kept as its JSON text, decoded on first use."""

    __slots__ = ("_text", "_data")

    def __init__(self, text: str | None) -> None:
        self._text, self._data = text, None

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self._text) if self._text else {}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


class ExampleTable(Sequence[Example]):
    """One split's examples read back from an Arrow table: built on access, in the stored order."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    @staticmethod
    def _example(row: Mapping[str, Any]) -> Example:
        return Example(**{name: row[name] for name in _COLUMNS[:-1]}, record=_Record(row["record"]))

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]  (an IndexError past either end)
        return self._example({name: self.table.column(name)[index].as_py() for name in _COLUMNS})

    def __iter__(self) -> Iterator[Example]:
        for batch in self.table.to_batches(max_chunksize=10_000):
            columns = batch.to_pydict()
            for i in range(batch.num_rows):
                yield self._example({name: columns[name][i] for name in _COLUMNS})


def _write_table(path: Path, examples: Sequence[Example]) -> None:
    import pyarrow as pa

    def record(e: Example) -> str | None:  # read back from a cache: its JSON as stored
        return e.record._text if isinstance(e.record, _Record) else (
            json.dumps(dict(e.record), ensure_ascii=False) if e.record else None)

    rows = [(e.uid, e.input, e.gold, e.teacher_label, e.rationale, e.teacher_error, record(e)) for e in examples]
    columns = list(zip(*rows)) if rows else [()] * len(_COLUMNS)
    table = pa.table({name: pa.array(list(values), pa.string()) for name, values in zip(_COLUMNS, columns)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=10_000)


def _read_table(path: Path) -> ExampleTable:
    import pyarrow as pa

    return ExampleTable(pa.ipc.open_file(pa.memory_map(str(path))).read_all())


def _publish(build: Callable[[Path], None], target: Path) -> None:
    """Build into a temporary directory next to ``target``, then rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():  # another process published the same version first: fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached_file_loader(cache_dir: str | Path) -> Callable[..., tuple[Sequence[Example], FileStats]]:
    """A :func:`distill.data.files.load_file` that stores each file it reads under ``cache_dir`` (:func:`cache_path`
    of the file's own :func:`data_version`) and reads it back from there next time."""

    def load(benchmark, data_dir, file_split, teacher="llm", logical="train", needed_by="they were asked for",
             on_misaligned_teacher="error"):  # noqa: ANN001, ANN202 - load_file's signature
        version = data_version(benchmark, data_dir, teacher, ["file", file_split, on_misaligned_teacher], file_split)
        stored = cache_path(cache_dir, benchmark.name, "file", version)
        if stored is not None and (stored / "file.json").is_file():
            stats = FileStats(**json.loads((stored / "file.json").read_text(encoding="utf-8")))
            # read without the teacher's shards: a file that needs them goes through load_file (its error)
            if not (needed_by is not None and teacher is not None and stats.teacher != teacher):
                return list(_read_table(stored / "examples.arrow")), stats
        examples, stats = load_file(benchmark, data_dir, file_split, teacher, logical, needed_by, on_misaligned_teacher)
        if stored is not None and not stored.is_dir():

            def build(staging: Path) -> None:
                _write_table(staging / "examples.arrow", examples)
                (staging / "file.json").write_text(json.dumps(asdict(stats), ensure_ascii=False), encoding="utf-8")

            _publish(build, stored)
        return examples, stats

    return load


#: what splits.json holds besides the examples
_SPLITS_META = ("sources", "dropped", "label_source", "missing_teacher", "rationale_counts")


def save_splits(directory: Path, splits: Splits) -> None:
    """Store ``splits`` in ``directory`` (created atomically; an existing one is kept)."""
    if directory.is_dir():
        return

    def build(staging: Path) -> None:
        for split in SPLITS:
            _write_table(staging / f"{split}.arrow", splits[split])
        meta = {"files": {name: asdict(stats) for name, stats in splits.files.items()},
                **{key: getattr(splits, key) for key in _SPLITS_META}}
        (staging / "splits.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    _publish(build, directory)


def load_splits(directory: Path) -> Splits | None:
    """The splits :func:`save_splits` stored in ``directory``, or None when there are none."""
    if not (directory / "splits.json").is_file():
        return None
    meta = json.loads((directory / "splits.json").read_text(encoding="utf-8"))
    return Splits(**{split: _read_table(directory / f"{split}.arrow") for split in SPLITS},  # type: ignore[arg-type]
                  files={name: FileStats(**stats) for name, stats in meta["files"].items()},
                  **{key: meta[key] for key in _SPLITS_META})


def cached_json(path: Path | None, compute: Callable[[], Any]) -> Any:
    """``compute()``, stored as JSON at ``path`` and read from there next time (None: no cache)."""
    if path is None:
        return compute()
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, path)
    return json.loads(path.read_text(encoding="utf-8"))
