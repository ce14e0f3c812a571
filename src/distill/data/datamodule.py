"""The LightningDataModule: a benchmark and a teacher in, batches of both tasks out.

Pipeline: :func:`distill.data.splits.build_splits` (files -> train/val/test examples with
teacher rationales; with ``cache_dir`` stored there in Arrow, keyed by
:func:`distill.data.cache.data_version`, so a warm start reads them instead of reparsing) ->
:class:`distill.data.encoding.Encoder` through ``datasets.map`` (``num_proc`` processes for big
splits; cached on disk under ``cache_dir``, keyed by tokenizer, settings and the data version, or
the texts themselves where there is no version) ->
:class:`distill.data.batching.GlobalBatchSampler` (one global batch per optimizer step, split
into this rank's micro-batches, grouped by length) -> :class:`distill.data.collate.Collator`
(dynamic padding per micro-batch, labels padded with -100).

Batches (see the project's DataModule contract):

* train: ``{"label": {input_ids, attention_mask, labels}, "rationale": {...}, "uid": [...]}``;
  ``"rationale"`` only with ``targets="step_by_step"`` and when some example of the micro-batch
  has a rationale (rows without one have labels all -100).
* val/test: ``{"label": {...}, "uid": [...], "input": [...], "gold": [...]}``.
* ``rationales``/``rationale_filter``: which of a teacher's samples the train rows hold
  (:mod:`distill.data.rationales`; ``all``: a row per sample, uid ``{uid}#s{s}``); ``sample`` draws one
  row per example each epoch (:class:`distill.data.batching.SampledRowsBatchSampler`).
* ``shared_input`` (step_by_step): x once for both tasks, the task markers after it; train batches
  as in :class:`distill.data.collate.Collator`, eval batches hold x alone (generation appends the
  label marker): :mod:`distill.data.shared_input`.

``student_kind`` lays the task batches out for the student: ``seq2seq`` (encoder input and
target apart) or ``causal`` (one ``prompt + completion`` sequence per row with the loss on the
completion alone; eval batches hold left-padded prompts): :mod:`distill.data.collate`.

Task prefixes apply to ``step_by_step`` (the two tasks share weights and need telling apart):
``[label] `` / ``[rationale] `` as in the paper, or the official code's ``predict: `` /
``explain: ``. ``standard`` and ``single_task`` train one task and, as in the official
``standard`` model, use no prefix.

Multi-device: build the Trainer with ``use_distributed_sampler=False`` and
``accumulate_grad_batches`` from :meth:`DistillDataModule.plan` (train.py does both); ``setup``
reads world size and rank from the attached trainer and checks both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from distill.benchmarks.base import Benchmark, Example
from distill.data.batching import (
    EvalBatchSampler,
    GlobalBatchSampler,
    SampledRowsBatchSampler,
    plan_batches,
    row_groups,
)
from distill.data.cache import cached_file_loader, data_version, load_splits, save_splits
from distill.data.collate import Collator
from distill.data.encoding import ENCODING_VERSION, Encoder, marker_ids, target_text
from distill.data.rationales import example_uid
from distill.data.splits import SPLITS, Splits, build_splits

__all__ = ["DistillDataModule", "TARGETS"]

TARGETS = ("standard", "step_by_step", "single_task")
#: ``num_proc=None`` tokenizes a split in several processes from this many rows on (below, one pays off less than it costs)
PARALLEL_TOKENIZATION_ROWS = 50_000
_UNSET = object()


def auto_num_proc(rows: int) -> int | None:
    """Processes for tokenizing ``rows`` rows: one per usable core for big splits, else None (this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, rows // PARALLEL_TOKENIZATION_ROWS)
    return workers if workers >= 2 else None


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig -> plain containers (Hydra hands those to ``__init__``)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def _as_benchmark(benchmark: Benchmark | Mapping[str, Any] | str) -> Benchmark:
    if isinstance(benchmark, Benchmark):
        return benchmark
    if isinstance(benchmark, str):
        from distill.benchmarks import get_benchmark

        return get_benchmark(benchmark)
    spec = _plain(benchmark)
    if isinstance(spec, Mapping) and "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec)
    raise TypeError(f"benchmark must be a Benchmark, a registered name or a config with _target_, got {benchmark!r}")


class DistillDataModule(pl.LightningDataModule):
    """Train/val/test batches of one benchmark with one teacher's rationales."""

    def __init__(
        self,
        benchmark: Benchmark | Mapping[str, Any] | str,
        data_dir: str | Path,
        tokenizer: Any = None,
        teacher: str | None = "llm",
        split_files: Mapping[str, str | None] | None = None,
        label_source: str = "gold",
        fraction: float = 1.0,
        seed: int = 0,
        holdout_fraction: float = 0.1,
        holdout_seed: int = 0,
        test_subset: int | None = None,
        on_parse_failure: str = "drop_rationale",
        on_misaligned_teacher: str = "error",
        targets: str = "step_by_step",
        batch_size: int = 64,
        micro_batch_size: int | None = None,
        eval_batch_size: int = 64,
        label_prefix: str = "[label] ",
        rationale_prefix: str = "[rationale] ",
        max_input_length: int = 512,
        max_target_length: int = 64,
        max_rationale_length: int = 256,
        group_by_length: bool = True,
        drop_last: bool = False,
        num_workers: int = 0,
        cache_dir: str | Path | None = None,
        pad_to_multiple_of: int = 1,
        pin_memory: bool = False,
        student_kind: str = "seq2seq",
        require_teacher: bool = True,
        num_proc: int | None = None,
        shared_input: bool = False,
        rationales: str = "first",
        rationale_filter: str = "none",
        rationale_position: str = "before",
    ) -> None:
        super().__init__()
        if targets not in TARGETS:
            raise ValueError(f"data.targets must be one of {TARGETS}, got {targets!r}")
        if student_kind not in ("seq2seq", "causal"):
            raise ValueError(f"student_kind must be 'seq2seq' or 'causal', got {student_kind!r}")
        self.student_kind = student_kind
        self.benchmark = _as_benchmark(benchmark)
        self.data_dir = Path(data_dir)
        self.teacher = teacher
        self.split_files = _plain(split_files)
        self.label_source = label_source
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.holdout_fraction = float(holdout_fraction)
        self.holdout_seed = int(holdout_seed)
        self.test_subset = None if test_subset is None else int(test_subset)
        self.on_parse_failure = on_parse_failure
        self.on_misaligned_teacher = on_misaligned_teacher
        # False for the data summary (a report): a train file the teacher lacks is read without it
        self.require_teacher = bool(require_teacher)
        # processes tokenizing a split (datasets.map); None: auto_num_proc (several for big splits only)
        self.num_proc = None if num_proc is None else int(num_proc)
        self._data_version: Any = _UNSET
        self._tokenizer_hash: str | None = None
        self.targets = targets
        from distill.data.rationales import RATIONALE_CHOICES, RATIONALE_FILTERS
        from distill.data.targets import RATIONALE_POSITIONS

        if rationales not in RATIONALE_CHOICES:
            raise ValueError(f"data.rationales must be one of {RATIONALE_CHOICES}, got {rationales!r}")
        if rationale_filter not in RATIONALE_FILTERS:
            raise ValueError(f"data.rationale_filter must be one of {RATIONALE_FILTERS}, got {rationale_filter!r}")
        if rationale_position not in RATIONALE_POSITIONS:
            raise ValueError(
                f"method.rationale_position must be one of {RATIONALE_POSITIONS}, got {rationale_position!r}"
            )
        # which of a teacher's samples train learns from (distill.data.rationales); single_task's layout
        self.rationales, self.rationale_filter = rationales, rationale_filter
        self.rationale_position = rationale_position
        # step_by_step alone has two tasks to share x between (the other targets ignore it)
        self.shared_input = bool(shared_input) and targets == "step_by_step"
        self.batch_size = int(batch_size)
        self.micro_batch_size = micro_batch_size
        self.eval_batch_size = int(eval_batch_size)
        self.label_prefix = label_prefix or ""
        self.rationale_prefix = rationale_prefix or ""
        self.max_input_length = int(max_input_length)
        self.max_target_length = int(max_target_length)
        self.max_rationale_length = int(max_rationale_length)
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.num_workers = int(num_workers)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.pin_memory = bool(pin_memory)
        self.world_size, self.rank = 1, 0
        self.tokenizer = None
        self._splits: Splits | None = None
        self._datasets: dict[str, Any] = {}
        plan_batches(self.batch_size, 1, self.micro_batch_size)  # fail at config time, not mid-run
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)

    # ----------------------------------------------------------------- examples
    def set_tokenizer(self, tokenizer: Any) -> None:
        """Attach the student's tokenizer (needs eos and pad tokens). Examples are rebuilt,
        since a benchmark's student input may depend on it (NLI's separator)."""
        if getattr(tokenizer, "eos_token_id", None) is None or getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                "the tokenizer needs an eos and a pad token (for BERT-style tokenizers set "
                "tokenizer.eos_token = tokenizer.sep_token)"
            )
        self.tokenizer = tokenizer
        self.benchmark.bind_tokenizer(tokenizer)
        self._splits = None
        self._datasets = {}
        self._data_version = _UNSET
        self._tokenizer_hash = None

    @property
    def data_version(self) -> str | None:
        """The key of the examples this module builds (files, settings, parser: :func:`distill.data.cache.data_version`);
        None without ``cache_dir`` or for a benchmark made in code (nothing is cached then)."""
        if self._data_version is _UNSET:
            settings = {
                "split_files": self.split_files, "label_source": self.label_source, "fraction": self.fraction,
                "seed": self.seed if self.fraction < 1.0 else None,  # picks nothing from the whole train
                "holdout_fraction": self.holdout_fraction, "holdout_seed": self.holdout_seed,
                **({"test_subset": self.test_subset} if self.test_subset is not None else {}),
                "on_parse_failure": self.on_parse_failure, "targets": self.targets,
                "on_misaligned_teacher": self.on_misaligned_teacher,
                # outside the paper's defaults only, so the paper's layout keeps its key
                **({"rationales": self.rationales} if self.rationales != "first" else {}),
                **({"rationale_filter": self.rationale_filter} if self.rationale_filter != "none" else {}),
            }  # not require_teacher: it changes nothing but whether a missing teacher is an error (see splits)
            self._data_version = (
                None if self.cache_dir is None else data_version(self.benchmark, self.data_dir, self.teacher, settings)
            )
        return self._data_version

    def cache_path(self, name: str) -> Path | None:
        """``cache_dir/{benchmark}/{name}``: where a figure of this data version is stored; None: no cache."""
        if self.cache_dir is None or self.data_version is None:
            return None
        return self.cache_dir / self.benchmark.name / name

    @property
    def tokenizer_hash(self) -> str:
        """A hash of the tokenizer (vocabulary and settings), computed once."""
        if self._tokenizer_hash is None:
            from datasets.fingerprint import Hasher

            self._tokenizer_hash = Hasher.hash(self.tokenizer)
        return self._tokenizer_hash

    @property
    def splits(self) -> Splits:
        """All three splits with their provenance and counts (built once, on first use). With a
        ``cache_dir`` they are read from there when this data version was built before, else built
        and stored there first; either way they are then the stored ones (memory-mapped Arrow)."""
        if self._splits is None:
            stored = self.cache_path(f"splits-{self.data_version}")
            if stored is not None:
                self._splits = load_splits(stored)
                # a report's splits that lack the teacher's train shards never serve a training run (its error)
                if self._splits is not None and not (self._splits.missing_teacher and self.require_teacher):
                    return self._splits
                self._splits = None
            splits = build_splits(
                self.benchmark,
                self.data_dir,
                teacher=self.teacher,
                split_files=self.split_files,
                label_source=self.label_source,
                fraction=self.fraction,
                seed=self.seed,
                holdout_fraction=self.holdout_fraction,
                holdout_seed=self.holdout_seed,
                test_subset=self.test_subset,
                on_parse_failure=self.on_parse_failure,
                targets=self.targets,
                on_misaligned_teacher=self.on_misaligned_teacher,
                require_teacher=self.require_teacher,
                load=None if stored is None else cached_file_loader(stored.parent),
                rationales=self.rationales,
                rationale_filter=self.rationale_filter,
            )
            if stored is not None:
                save_splits(stored, splits)
                del splits
                self._splits = load_splits(stored)
            else:
                self._splits = splits
        return self._splits

    def examples(self, split: str) -> list[Example]:
        """The examples of ``"train"``, ``"val"`` or ``"test"`` (before prefixes and tokenization)."""
        return self.splits[split]

    @property
    def task_prefixes(self) -> dict[str, str]:
        """Prefix per task as the student sees it (empty outside step_by_step)."""
        if self.targets == "step_by_step":
            return {"label": self.label_prefix, "rationale": self.rationale_prefix}
        return {"label": "", "rationale": ""}

    @property
    def shared_markers(self) -> tuple[list[int], list[int]] | None:
        """(label, rationale) marker ids of the shared-input layout; None in the paper's."""
        if not self.shared_input:
            return None
        return marker_ids(self.tokenizer, self.label_prefix), marker_ids(self.tokenizer, self.rationale_prefix)

    # ----------------------------------------------------------------- batching plan
    def plan(self, world_size: int | None = None) -> tuple[int, int]:
        """``(micro_batch_size, accumulate_grad_batches)`` for ``world_size`` processes."""
        return plan_batches(self.batch_size, world_size or self.world_size, self.micro_batch_size)

    def _read_trainer(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        self.world_size, self.rank = int(trainer.world_size), int(trainer.global_rank)
        _, accumulate = self.plan()
        if int(getattr(trainer, "accumulate_grad_batches", accumulate)) != accumulate:
            raise ValueError(
                f"Trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} but data.batch_size="
                f"{self.batch_size} (global) over {self.world_size} process(es) with micro_batch_size="
                f"{self.micro_batch_size} needs {accumulate}: pass plan_batches(...)[1] to the Trainer"
            )
        connector = getattr(trainer, "_accelerator_connector", None)
        if self.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ValueError(
                "DistillDataModule shards global batches itself: build the Trainer with use_distributed_sampler=False"
            )

    # ----------------------------------------------------------------- tokenization
    def _fingerprint(self, split: str, encoder: Encoder) -> str:
        """The tokenized split's key: tokenizer, encoder settings and the data version, or (no
        version) the texts themselves."""
        digest = hashlib.sha256()
        digest.update(self.tokenizer_hash.encode())
        digest.update(json.dumps(encoder.settings(), sort_keys=True).encode())
        digest.update(json.dumps([ENCODING_VERSION, split, self.benchmark.name]).encode())
        if self.targets == "single_task" and self.rationale_position != "before":  # the paper's key stays
            digest.update(json.dumps(["rationale_position", self.rationale_position]).encode())
        if self.data_version is not None:
            digest.update(json.dumps(["data_version", self.data_version, self.label_source]).encode())
        else:
            rows = self._rows(split)
            for column in sorted(rows):
                digest.update(json.dumps(rows[column], ensure_ascii=False).encode())
        return digest.hexdigest()[:40]

    def _rows(self, split: str) -> dict[str, list[Any]]:
        train = split == "train"
        examples = self.examples(split)
        rows: dict[str, list[Any]] = {"uid": [], "input": [], "gold": [], "target": [], "rationale": []}
        for ex in examples:
            rows["uid"].append(ex.uid)
            rows["input"].append(ex.input)
            rows["gold"].append(ex.gold)
            rows["target"].append(target_text(ex, self.targets, self.label_source if train else "gold",
                                              self.rationale_position))
            rows["rationale"].append(ex.rationale if (train and self.targets == "step_by_step") else None)
        return rows

    def dataset(self, split: str) -> Any:
        """The tokenized ``datasets.Dataset`` of a split (cached on disk when ``cache_dir`` is set)."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        if split in self._datasets:
            return self._datasets[split]
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: pass tokenizer= or call set_tokenizer first")
        import datasets

        encoder = Encoder(
            self.tokenizer,
            label_prefix=self.task_prefixes["label"],
            rationale_prefix=self.task_prefixes["rationale"],
            max_input_length=self.max_input_length,
            max_target_length=(
                self.max_target_length + self.max_rationale_length
                if self.targets == "single_task"
                else self.max_target_length
            ),
            max_rationale_length=self.max_rationale_length,
            rationale_task=split == "train" and self.targets == "step_by_step",
            student_kind=self.student_kind,
            shared_input=self.shared_input,
        )
        fingerprint = self._fingerprint(split, encoder)
        cache_file = manifest = None
        if self.cache_dir is not None:
            directory = self.cache_dir / self.benchmark.name
            directory.mkdir(parents=True, exist_ok=True)
            cache_file = str(directory / f"{split}-{fingerprint}.arrow")
            manifest = directory / f"{split}-{fingerprint}.files.json"
            stored = self._load_tokenized(manifest)
            if stored is not None:
                self._datasets[split] = stored
                return stored
        rows = self._rows(split)
        features = datasets.Features(
            {name: datasets.Value("string") for name in ("uid", "input", "gold", "target", "rationale")}
        )
        raw = datasets.Dataset.from_dict(rows, features=features)
        del rows
        num_proc = self.num_proc if self.num_proc is not None else auto_num_proc(len(raw))
        encoded = raw.map(
            encoder,
            batched=True,
            batch_size=1000,
            remove_columns=["target", "rationale"],
            cache_file_name=cache_file,
            load_from_cache_file=True,
            new_fingerprint=fingerprint,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            desc=f"tokenizing {self.benchmark.name} {split}",
        )
        if manifest is not None and encoded.cache_files:
            # the files of the tokenized split in order (several with num_proc): a warm start reads these alone
            files = [Path(f["filename"]).name for f in encoded.cache_files]
            staging = manifest.with_name(f".{manifest.name}.{os.getpid()}")
            staging.write_text(json.dumps(files))
            os.replace(staging, manifest)
        self._datasets[split] = encoded
        return encoded

    @staticmethod
    def _load_tokenized(manifest: Path) -> Any:
        """The tokenized split a manifest lists (its Arrow files, memory-mapped), or None when incomplete."""
        if not manifest.is_file():
            return None
        import datasets

        paths = [manifest.parent / name for name in json.loads(manifest.read_text())]
        if not paths or not all(path.is_file() for path in paths):
            return None
        parts = [datasets.Dataset.from_file(str(path)) for path in paths]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        self._read_trainer()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in needed.get(stage or "", SPLITS):
            if split == "test" and not self.examples("test"):
                continue
            self.dataset(split)

    def _loader(self, dataset: Any, batch_sampler: Any, collator: Collator) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_sampler(self) -> GlobalBatchSampler:
        dataset = self.dataset("train")
        lengths = dataset["length"]
        plan = {"global_batch_size": self.batch_size, "micro_batch_size": self.plan()[0], "world_size": self.world_size,
                "rank": self.rank, "seed": self.seed, "shuffle": True, "group_by_length": self.group_by_length,
                "drop_last": self.drop_last}
        if self.rationales == "sample":  # one of each example's rows per epoch
            return SampledRowsBatchSampler(row_groups([example_uid(uid) for uid in dataset["uid"]]), lengths, **plan)
        return GlobalBatchSampler(lengths, **plan)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        columns = ["uid", "label_input_ids", "label_ids"]
        if self.targets == "step_by_step":
            columns += ["rationale_ids"] if self.shared_input else ["rationale_input_ids", "rationale_ids"]
        collator = Collator(
            self.tokenizer.pad_token_id,
            train=True,
            rationale_task=self.targets == "step_by_step",
            pad_to_multiple_of=self.pad_to_multiple_of,
            student_kind=self.student_kind,
            shared_markers=self.shared_markers,
        )
        sampler = self.train_sampler()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(trainer, "global_step", 0) > 0:
            sampler.resume_at(trainer.global_step)  # a resumed run: skip the global batches already trained on
        return self._loader(dataset.select_columns(columns), sampler, collator)

    def _eval_dataloader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        sampler = EvalBatchSampler(dataset["length"], self.eval_batch_size, rank=self.rank, world_size=self.world_size)
        columns = ["uid", "input", "gold", "label_input_ids", "label_ids"]
        collator = Collator(self.tokenizer.pad_token_id, train=False, pad_to_multiple_of=self.pad_to_multiple_of,
                            student_kind=self.student_kind)
        return self._loader(dataset.select_columns(columns), sampler, collator)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
