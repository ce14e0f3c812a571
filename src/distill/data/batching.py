"""Global batches that mean the same on 1 or N devices, grouped by length. ``data.batch_size`` is the global
batch: :func:`plan_batches` splits it into micro-batch x accumulation for a world size;
:class:`GlobalBatchSampler` draws one global batch per optimizer step from a seeded per-epoch permutation,
sorts it by length and hands rank r its micro-batches. Lightning must not replace it
(``use_distributed_sampler=False``); it calls ``set_epoch`` on the :class:`EpochPermutation` inside."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BatchPlan", "plan_batches", "EpochPermutation", "GlobalBatchSampler", "SampledRowsBatchSampler", "row_groups",
           "EvalBatchSampler"]


def plan_batches(global_batch: int, world_size: int = 1, micro_batch_size: int | None = None) -> tuple[int, int]:
    """``(micro_batch_size, accumulate_grad_batches)`` so that
    ``micro_batch_size * accumulate_grad_batches * world_size == global_batch``.

    Without ``micro_batch_size`` each rank takes its whole share in one micro-batch.
    """
    if global_batch < 1 or world_size < 1:
        raise ValueError(f"global batch ({global_batch}) and world size ({world_size}) must be positive")
    if micro_batch_size is None:
        if global_batch % world_size:
            raise ValueError(
                f"data.batch_size={global_batch} (global) does not split evenly over {world_size} processes"
            )
        return global_batch // world_size, 1
    if micro_batch_size < 1 or global_batch % (micro_batch_size * world_size):
        raise ValueError(
            f"data.batch_size={global_batch} (global) is not a multiple of data.micro_batch_size="
            f"{micro_batch_size} x {world_size} processes"
        )
    return micro_batch_size, global_batch // (micro_batch_size * world_size)


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's ``global_batch_size`` examples are laid out: ``world_size`` processes
    x ``micro_batch_size`` x ``accumulate_grad_batches``. Made once per run (:meth:`of`) and handed to
    the Trainer and the data module (:func:`distill.training.build_trainer`)."""

    global_batch_size: int
    world_size: int
    micro_batch_size: int
    accumulate_grad_batches: int

    @classmethod
    def of(cls, global_batch_size: int, world_size: int = 1, micro_batch_size: int | None = None) -> BatchPlan:
        """The plan of :func:`plan_batches` (its errors for a batch that does not split)."""
        micro, accumulate = plan_batches(int(global_batch_size), int(world_size), micro_batch_size)
        return cls(int(global_batch_size), int(world_size), micro, accumulate)


class EpochPermutation(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)``; the identity without shuffle."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches, ``accumulate`` per optimizer step.

    Every epoch is ``ceil(n / global_batch)`` steps; the last global batch is filled up by
    wrapping around the epoch's permutation (like ``DistributedSampler``'s padding) unless
    ``drop_last``, so every optimizer step sees exactly ``global_batch`` examples.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        global_batch_size: int,
        micro_batch_size: int | None = None,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty dataset")
        self.lengths = list(lengths)
        self.global_batch_size = global_batch_size
        self.micro_batch_size, self.accumulate = plan_batches(global_batch_size, world_size, micro_batch_size)
        self.world_size, self.rank = world_size, rank
        self.group_by_length, self.drop_last = group_by_length, drop_last
        self.sampler = EpochPermutation(len(self.lengths), seed, shuffle)
        self._skip_steps = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def resume_at(self, global_step: int) -> None:
        """Continue where a run stopped: every epoch is exactly ``steps_per_epoch`` optimizer steps,
        so ``global_step`` fixes the epoch and how many of its global batches were already used.
        The next iteration skips those; later ones start from the top."""
        self.set_epoch(global_step // self.steps_per_epoch)
        self._skip_steps = global_step % self.steps_per_epoch

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self.lengths), self.global_batch_size
        if self.drop_last and n >= b:
            return n // b
        return math.ceil(n / b)

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches (the same on every rank)."""
        order = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.lengths))
        total = self.steps_per_epoch * self.global_batch_size
        order = np.resize(order, total)  # cycles when n is not a multiple (wrap-around fill)
        return [order[i : i + self.global_batch_size].tolist() for i in range(0, total, self.global_batch_size)]

    def micro_batches(self, global_batch: list[int]) -> list[list[int]]:
        """All ``world_size * accumulate`` micro-batches of one global batch, longest first."""
        if self.group_by_length:
            global_batch = sorted(global_batch, key=lambda i: -self.lengths[i])
        m = self.micro_batch_size
        return [global_batch[i : i + m] for i in range(0, len(global_batch), m)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip_steps = self._skip_steps, 0
        for global_batch in self.global_batches()[skip:]:
            micro = self.micro_batches(global_batch)
            # interleave: rank r takes micro-batches r, r + W, ... (balances lengths across ranks)
            yield from micro[self.rank :: self.world_size]

    def __len__(self) -> int:
        # the full epoch, also while resuming: Lightning counts the resumed epoch's batches from its checkpoint
        return self.steps_per_epoch * self.accumulate


def row_groups(keys: Sequence[str]) -> list[list[int]]:
    """Row indices grouped by key (an example's uid), groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class SampledRowsBatchSampler(GlobalBatchSampler):
    """``data.rationales=sample``: an epoch is one row of every group (an example's rows, one per
    teacher sample), the row drawn from ``(seed, epoch)`` apart from the epoch's permutation.

    The epoch, its steps and ``resume_at`` are those of :class:`GlobalBatchSampler` over the groups, so
    a resumed run draws the rows the uninterrupted run would have.
    """

    def __init__(self, groups: Sequence[Sequence[int]], lengths: Sequence[int], **kwargs) -> None:
        if not groups or any(not g for g in groups):
            raise ValueError("every group needs at least one row")
        self.groups = [list(g) for g in groups]
        self.row_lengths = list(lengths)
        self.seed = kwargs.get("seed", 0)
        super().__init__([self.row_lengths[g[0]] for g in self.groups], **kwargs)

    def chosen_rows(self, epoch: int) -> list[int]:
        """The row of every group in ``epoch`` (the same on every rank, in every run with this seed)."""
        sizes = np.array([len(g) for g in self.groups])
        picks = np.random.default_rng([self.seed, epoch, 1]).integers(0, sizes)
        return [g[p] for g, p in zip(self.groups, picks.tolist())]

    def global_batches(self) -> list[list[int]]:
        rows = self.chosen_rows(self.sampler.epoch)
        return [[rows[j] for j in batch] for batch in super().global_batches()]

    def micro_batches(self, global_batch: list[int]) -> list[list[int]]:
        if self.group_by_length:
            global_batch = sorted(global_batch, key=lambda i: -self.row_lengths[i])
        m = self.micro_batch_size
        return [global_batch[i : i + m] for i in range(0, len(global_batch), m)]


class EvalBatchSampler(Sampler[list[int]]):
    """Fixed batches for evaluation: longest first (so memory trouble shows at once), no shuffle.

    With several ranks, rank r takes batches r, r + world_size, ...: every example is generated
    once, and the module gathers the predictions of all ranks before scoring.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, sort_by_length: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"eval batch size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
