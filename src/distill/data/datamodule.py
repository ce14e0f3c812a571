"""The LightningDataModule: a benchmark and a teacher in, batches of the method's tasks out. Examples come
from :func:`~distill.data.splits.build_splits`, are tokenized by :func:`~distill.data.encoding.tokenize` (both
cached: :func:`~distill.data.cache.cache_path`), drawn by :class:`~distill.data.batching.GlobalBatchSampler` as
the run's :class:`~distill.data.batching.BatchPlan` says (:meth:`DistillDataModule.connect`) and padded by
:class:`~distill.data.collate.Collator`. Train batches: ``{"label", "rationale" (a method with a rationale task,
where the micro-batch has one), "uid"}``; eval batches: ``{"label", "uid", "input", "gold"}``. The
constructor's defaults are those of ``conf/data/_base.yaml``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from distill.benchmarks.base import Benchmark, Example
from distill.data.batching import BatchPlan, EvalBatchSampler, GlobalBatchSampler, SampledRowsBatchSampler
from distill.data.cache import cache_path, cached_file_loader, data_version, load_splits, save_splits
from distill.data.collate import Collator
from distill.data.encoding import ENCODING_VERSION, Encoder, marker_ids, rows_digest, text_rows, tokenize
from distill.data.rationales import RATIONALE_CHOICES, RATIONALE_FILTERS, example_uid
from distill.data.splits import SPLITS, Splits, build_splits, subset_size
from distill.data.targets import RATIONALE_POSITIONS
from distill.methods import Method, get_method

__all__ = ["DistillDataModule"]


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig -> plain containers (Hydra hands those to ``__init__``)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


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


def _choice(value: str, choices: Sequence[str], setting: str) -> str:
    if value not in choices:
        raise ValueError(f"{setting} must be one of {tuple(choices)}, got {value!r}")
    return value


class DistillDataModule(pl.LightningDataModule):
    """Train/val/test batches of one benchmark with one teacher's rationales."""

    def __init__(
        self,
        benchmark: Benchmark | Mapping[str, Any] | str,
        data_dir: str | Path,
        tokenizer: Any = None,
        *,
        # which examples (distill.data.splits; require_teacher=False: a report, see there)
        teacher: str | None = "llm", split_files: Mapping[str, str | None] | None = None, label_source: str = "gold",
        fraction: float = 1.0, seed: int = 0, holdout_fraction: float = 0.1, holdout_seed: int = 0,
        test_subset: int | None = None, val_subset: int | None = None, on_parse_failure: str = "drop_rationale",
        on_misaligned_teacher: str = "error", rationales: str = "first", rationale_filter: str = "none",
        require_teacher: bool = True,
        # what the batches carry (the method's tasks) and how they are tokenized
        targets: str | Method = "step_by_step", label_prefix: str = "[label] ", rationale_prefix: str = "[rationale] ",
        max_input_length: int = 1024, max_target_length: int = 64, max_rationale_length: int = 256,
        student_kind: str = "seq2seq", shared_input: bool = False, rationale_position: str = "before",
        # how they are batched and loaded
        batch_size: int = 64, micro_batch_size: int | None = None, eval_batch_size: int = 64,
        group_by_length: bool = True, drop_last: bool = False, num_workers: int = 0,
        cache_dir: str | Path | None = None, num_proc: int | None = None,
    ) -> None:
        super().__init__()
        #: the method the batches serve; ``targets`` is its name (cache keys and the summary read it)
        self.method = get_method(targets)
        self.targets = self.method.name
        self.student_kind = _choice(student_kind, ("seq2seq", "causal"), "student_kind")
        self.benchmark = _as_benchmark(benchmark)
        self.data_dir, self.teacher, self.split_files = Path(data_dir), teacher, _plain(split_files)
        self.label_source, self.fraction, self.seed = label_source, float(fraction), int(seed)
        self.holdout_fraction, self.holdout_seed = float(holdout_fraction), int(holdout_seed)
        self.test_subset = subset_size(test_subset, "data.test_subset")
        self.val_subset = subset_size(val_subset, "data.val_subset")
        self.on_parse_failure, self.on_misaligned_teacher = on_parse_failure, on_misaligned_teacher
        self.require_teacher = bool(require_teacher)
        self.rationales = _choice(rationales, RATIONALE_CHOICES, "data.rationales")
        self.rationale_filter = _choice(rationale_filter, RATIONALE_FILTERS, "data.rationale_filter")
        self.rationale_position = _choice(rationale_position, RATIONALE_POSITIONS, "method.rationale_position")
        # only a method with two tasks has an x to share between them (the others ignore it)
        self.shared_input = bool(shared_input) and self.method.rationale_task
        # the one-process plan until a run connects its own (a batch that does not split fails here)
        self.batch_plan = BatchPlan.of(batch_size, 1, micro_batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.label_prefix, self.rationale_prefix = label_prefix or "", rationale_prefix or ""
        self.max_input_length, self.max_target_length = int(max_input_length), int(max_target_length)
        self.max_rationale_length = int(max_rationale_length)
        #: tokens of a label target and of a generated label (the method's label budget)
        self.label_budget = self.method.label_budget(self.max_target_length, self.max_rationale_length)
        self.group_by_length, self.drop_last, self.num_workers = group_by_length, drop_last, int(num_workers)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # processes tokenizing a split (datasets.map); None: several for big splits only
        self.num_proc = None if num_proc is None else int(num_proc)
        self.world_size, self.rank = 1, 0
        # the student's tokenizer (eos and pad needed); a benchmark's input may depend on it (NLI's separator)
        self.tokenizer = tokenizer
        if tokenizer is not None:
            if getattr(tokenizer, "eos_token_id", None) is None or getattr(tokenizer, "pad_token_id", None) is None:
                raise ValueError("the tokenizer needs an eos and a pad token (for BERT-style tokenizers set "
                                 "tokenizer.eos_token = tokenizer.sep_token)")
            self.benchmark.bind_tokenizer(tokenizer)
        self._datasets: dict[str, Any] = {}

    @property
    def batch_size(self) -> int:
        """The global batch per optimizer step (``data.batch_size``)."""
        return self.batch_plan.global_batch_size

    def connect(self, plan: BatchPlan) -> None:
        """Train as the run's plan says (:func:`distill.training.connect_batch_plan` hands the Trainer the
        same plan in the same call)."""
        if plan.global_batch_size != self.batch_size:
            raise ValueError(f"a batch plan for a global batch of {plan.global_batch_size}, but data.batch_size="
                             f"{self.batch_size}")
        self.batch_plan = plan

    def _selection(self) -> dict[str, Any]:
        """The settings :func:`build_splits` chooses the examples by (``targets``: the method's name)."""
        names = ("teacher", "split_files", "label_source", "fraction", "seed", "holdout_fraction", "holdout_seed",
                 "test_subset", "val_subset", "on_parse_failure", "targets", "on_misaligned_teacher", "rationales",
                 "rationale_filter")
        return {name: getattr(self, name) for name in names}

    @cached_property
    def data_version(self) -> str | None:
        """The version of the examples this module builds (:func:`distill.data.cache.data_version`: files,
        settings, parser); None without ``cache_dir`` or for a benchmark made in code."""
        if self.cache_dir is None:
            return None
        # not require_teacher: it changes nothing but whether a missing teacher is an error (see splits)
        settings = {key: value for key, value in self._selection().items() if key != "teacher"}
        if self.fraction == 1.0:
            settings["seed"] = None  # picks nothing from the whole train
        return data_version(self.benchmark, self.data_dir, self.teacher, settings)

    def cache_path(self, kind: str, *parts: Any, version: str | None = None) -> Path | None:
        """Where data of ``kind`` derived from this data version (or ``version``) and ``parts`` is stored
        (:func:`distill.data.cache.cache_path`); None: not cached."""
        return cache_path(self.cache_dir, self.benchmark.name, kind, version or self.data_version, *parts)

    @cached_property
    def tokenizer_hash(self) -> str:
        """A hash of the tokenizer (vocabulary and settings), computed once."""
        from datasets.fingerprint import Hasher

        return Hasher.hash(self.tokenizer)

    @cached_property
    def splits(self) -> Splits:
        """All three splits with their provenance and counts (built once, on first use). With a
        ``cache_dir`` they are read from there when this data version was built before, else built
        and stored there first; either way they are then the stored ones (memory-mapped Arrow)."""
        stored = self.cache_path("splits")
        if stored is not None:
            splits = load_splits(stored)
            # a report's splits that lack the teacher's train shards never serve a training run (its error)
            if splits is not None and not (splits.missing_teacher and self.require_teacher):
                return splits
        splits = build_splits(self.benchmark, self.data_dir, **{**self._selection(), "targets": self.method},
                              require_teacher=self.require_teacher,
                              load=None if stored is None else cached_file_loader(self.cache_dir))
        if stored is None:
            return splits
        save_splits(stored, splits)
        del splits
        return load_splits(stored)

    def examples(self, split: str) -> list[Example]:
        """The examples of ``"train"``, ``"val"`` or ``"test"`` (before prefixes and tokenization)."""
        return self.splits[split]

    @property
    def task_prefixes(self) -> dict[str, str]:
        """Prefix per task as the student sees it (empty for a method of one task)."""
        if self.method.rationale_task:
            return {"label": self.label_prefix, "rationale": self.rationale_prefix}
        return {"label": "", "rationale": ""}

    def encoder(self, split: str) -> Encoder:
        """The :class:`Encoder` of a split (train alone learns the rationale task)."""
        prefixes = self.task_prefixes
        return Encoder(self.tokenizer, prefixes["label"], prefixes["rationale"], self.max_input_length,
                       self.label_budget, self.max_rationale_length,
                       rationale_task=split == "train" and self.method.rationale_task,
                       student_kind=self.student_kind, shared_input=self.shared_input)

    def tokenized_parts(self, split: str) -> list[Any]:
        """What the tokenized split derives from besides its examples (its cache key's ``parts``)."""
        position = self.rationale_position if self.method.label_holds_rationale else None
        return [ENCODING_VERSION, split, self.tokenizer_hash, self.encoder(split).settings(), position]

    def dataset(self, split: str) -> Any:
        """The tokenized ``datasets.Dataset`` of a split (cached on disk when ``cache_dir`` is set)."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        if split not in self._datasets:
            if self.tokenizer is None:
                raise RuntimeError("no tokenizer: pass tokenizer= to DistillDataModule")
            source = self.label_source if split == "train" else "gold"  # evaluation is on gold labels
            rows = lambda: text_rows(self.examples(split), self.method, source, self.rationale_position)  # noqa: E731
            version = self.data_version
            if version is None and self.cache_dir is not None:  # a benchmark made in code: its texts are its version
                version = rows_digest(rows())
            self._datasets[split] = tokenize(rows, self.encoder(split),
                                             self.cache_path(split, *self.tokenized_parts(split), version=version),
                                             self.num_proc, f"tokenizing {self.benchmark.name} {split}")
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # evaluation shards its batches over the trainer's processes
            self.world_size, self.rank = int(trainer.world_size), int(trainer.global_rank)
            connector = getattr(trainer, "_accelerator_connector", None)
            if self.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
                raise ValueError("DistillDataModule shards global batches itself: build the Trainer with "
                                 "use_distributed_sampler=False")
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in needed.get(stage or "", SPLITS):
            if split != "test" or self.examples("test"):
                self.dataset(split)

    def _loader(self, dataset: Any, columns: list[str], batch_sampler: Any, collator: Collator) -> DataLoader:
        return DataLoader(dataset.select_columns(columns), batch_sampler=batch_sampler, collate_fn=collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_sampler(self) -> GlobalBatchSampler:
        """This rank's train batches as the plan lays them out (one row per example and epoch for ``sample``)."""
        dataset = self.dataset("train")
        settings = dict(rank=self.rank, seed=self.seed, group_by_length=self.group_by_length, drop_last=self.drop_last)
        if self.rationales == "sample":  # one row of each example's per epoch
            keys = [example_uid(uid) for uid in dataset["uid"]]
            return SampledRowsBatchSampler(keys, dataset["length"], self.batch_plan, **settings)
        return GlobalBatchSampler(dataset["length"], self.batch_plan, **settings)

    def train_dataloader(self) -> DataLoader:
        columns = ["uid", "label_input_ids", "label_ids"]
        if self.method.rationale_task:
            columns += ["rationale_ids"] if self.shared_input else ["rationale_input_ids", "rationale_ids"]
        markers = None  # (label, rationale) marker ids of the shared-input layout; None in the paper's
        if self.shared_input:
            markers = marker_ids(self.tokenizer, self.label_prefix), marker_ids(self.tokenizer, self.rationale_prefix)
        collator = Collator(self.tokenizer.pad_token_id, train=True, rationale_task=self.method.rationale_task,
                            student_kind=self.student_kind, shared_markers=markers)
        sampler = self.train_sampler()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(trainer, "global_step", 0) > 0:
            sampler.resume_at(trainer.global_step)  # a resumed run: skip the global batches already trained on
        return self._loader(self.dataset("train"), columns, sampler, collator)

    def _eval_dataloader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        sampler = EvalBatchSampler(dataset["length"], self.eval_batch_size, rank=self.rank, world_size=self.world_size)
        collator = Collator(self.tokenizer.pad_token_id, train=False, student_kind=self.student_kind)
        return self._loader(dataset, ["uid", "input", "gold", "label_input_ids", "label_ids"], sampler, collator)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
