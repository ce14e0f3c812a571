"""The LightningDataModule: a benchmark and a teacher in, batches of the method's tasks out.

Examples come from :func:`distill.data.splits.build_splits`, are tokenized by
:class:`distill.data.encoding.Encoder` (both cached under ``cache_dir``, keyed by the data version),
drawn by :class:`distill.data.batching.GlobalBatchSampler` as its :class:`~distill.data.batching.BatchPlan`
says and padded by :class:`distill.data.collate.Collator` for a ``seq2seq`` or ``causal`` student.
Train batches: ``{"label": {...}, "rationale": {...}, "uid": [...]}`` (``"rationale"`` for a method
with a rationale task, where the micro-batch has one); eval batches: ``{"label", "uid", "input",
"gold"}``. A multi-process run builds its Trainer with ``use_distributed_sampler=False`` and hands it
and this module one plan (:func:`distill.training.build_trainer`)."""

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
    BatchPlan,
    EvalBatchSampler,
    GlobalBatchSampler,
    SampledRowsBatchSampler,
    row_groups,
)
from distill.data.cache import cached_file_loader, data_version, load_splits, save_splits
from distill.data.collate import Collator
from distill.data.encoding import ENCODING_VERSION, Encoder, marker_ids, target_text
from distill.data.rationales import example_uid
from distill.data.splits import SPLITS, Splits, build_splits, subset_size
from distill.methods import Method, get_method

__all__ = ["DistillDataModule"]

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
        val_subset: int | None = None,
        on_parse_failure: str = "drop_rationale",
        on_misaligned_teacher: str = "error",
        targets: str | Method = "step_by_step",
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
        #: the method the batches serve; ``targets`` is its name (cache keys and the summary read it)
        self.method = get_method(targets)
        self.targets = self.method.name
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
        self.val_subset = subset_size(val_subset, "data.val_subset")
        self.on_parse_failure = on_parse_failure
        self.on_misaligned_teacher = on_misaligned_teacher
        # False for the data summary (a report): a train file the teacher lacks is read without it
        self.require_teacher = bool(require_teacher)
        # processes tokenizing a split (datasets.map); None: auto_num_proc (several for big splits only)
        self.num_proc = None if num_proc is None else int(num_proc)
        self._data_version: Any = _UNSET
        self._tokenizer_hash: str | None = None
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
        # only a method with two tasks has an x to share between them (the others ignore it)
        self.shared_input = bool(shared_input) and self.method.rationale_task
        self.batch_size = int(batch_size)
        # one process until a run hands its own plan (fails at config time, not mid-run)
        self._batch_plan = BatchPlan.of(self.batch_size, 1, micro_batch_size)
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
                **({"val_subset": self.val_subset} if self.val_subset is not None else {}),
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
                val_subset=self.val_subset,
                on_parse_failure=self.on_parse_failure,
                targets=self.method,
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
        """Prefix per task as the student sees it (empty for a method of one task)."""
        if self.method.rationale_task:
            return {"label": self.label_prefix, "rationale": self.rationale_prefix}
        return {"label": "", "rationale": ""}

    @property
    def shared_markers(self) -> tuple[list[int], list[int]] | None:
        """(label, rationale) marker ids of the shared-input layout; None in the paper's."""
        if not self.shared_input:
            return None
        return marker_ids(self.tokenizer, self.label_prefix), marker_ids(self.tokenizer, self.rationale_prefix)

    # ----------------------------------------------------------------- batching plan
    @property
    def batch_plan(self) -> BatchPlan:
        """How train batches are laid out over processes and accumulation steps."""
        return self._batch_plan

    @batch_plan.setter
    def batch_plan(self, plan: BatchPlan) -> None:
        if plan.global_batch_size != self.batch_size:
            raise ValueError(f"a batch plan for a global batch of {plan.global_batch_size}, but data.batch_size="
                             f"{self.batch_size}")
        self._batch_plan = plan

    def _read_trainer(self, stage: str | None) -> None:
        """This process's rank and the world size from the attached trainer (eval batches are sharded
        over them); a fit must run on the processes and accumulation of the plan this module holds."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        self.world_size, self.rank = int(trainer.world_size), int(trainer.global_rank)
        plan = self._batch_plan
        accumulate = int(getattr(trainer, "accumulate_grad_batches", plan.accumulate_grad_batches))
        if stage == "fit" and (self.world_size, accumulate) != (plan.world_size, plan.accumulate_grad_batches):
            raise ValueError(
                f"the Trainer runs {self.world_size} process(es) with accumulate_grad_batches={accumulate}, but the "
                f"data module's plan is {plan}: hand both the same BatchPlan (distill.training.build_trainer does)"
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
        if self.method.label_holds_rationale and self.rationale_position != "before":  # the paper's key stays
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
            rows["target"].append(target_text(ex, self.method, self.label_source if train else "gold",
                                              self.rationale_position))
            rows["rationale"].append(ex.rationale if (train and self.method.rationale_task) else None)
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
            max_target_length=self.method.label_budget(self.max_target_length, self.max_rationale_length),
            max_rationale_length=self.max_rationale_length,
            rationale_task=split == "train" and self.method.rationale_task,
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
        self._read_trainer(stage)
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
        plan = {"global_batch_size": self.batch_size, "micro_batch_size": self._batch_plan.micro_batch_size,
                "world_size": self._batch_plan.world_size, "rank": self.rank, "seed": self.seed, "shuffle": True,
                "group_by_length": self.group_by_length, "drop_last": self.drop_last}
        if self.rationales == "sample":  # one of each example's rows per epoch
            return SampledRowsBatchSampler(row_groups([example_uid(uid) for uid in dataset["uid"]]), lengths, **plan)
        return GlobalBatchSampler(lengths, **plan)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        columns = ["uid", "label_input_ids", "label_ids"]
        if self.method.rationale_task:
            columns += ["rationale_ids"] if self.shared_input else ["rationale_input_ids", "rationale_ids"]
        collator = Collator(
            self.tokenizer.pad_token_id,
            train=True,
            rationale_task=self.method.rationale_task,
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
