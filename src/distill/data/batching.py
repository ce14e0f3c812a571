"""Global batches that mean the same on 1 or N devices, grouped by length: a :class:`BatchPlan`, made once per
run, lays ``data.batch_size`` (global) out as processes x micro-batch x accumulation; :class:`GlobalBatchSampler`
draws one global batch per optimizer step from a seeded per-epoch permutation, sorts it by length and hands
rank r its micro-batches. Lightning must not replace it (``use_distributed_sampler=False``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BatchPlan", "EpochPermutation", "EvalBatchSampler", "GlobalBatchSampler", "SampledRowsBatchSampler"]


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's ``global_batch_size`` examples are laid out: ``world_size`` processes
    x ``micro_batch_size`` x ``accumulate_grad_batches``. Made once per run (:meth:`of`) and handed to
    the Trainer and the data module together (:func:`distill.training.connect_batch_plan`)."""

    global_batch_size: int
    world_size: int
    micro_batch_size: int
    accumulate_grad_batches: int

    @classmethod
    def of(cls, global_batch_size: int, world_size: int = 1, micro_batch_size: int | None = None) -> BatchPlan:
        """The plan of a global batch over ``world_size`` processes; without ``micro_batch_size`` each
        process takes its whole share in one micro-batch. A batch that does not split is a ValueError."""
        total, world = int(global_batch_size), int(world_size)
        if total < 1 or world < 1:
            raise ValueError(f"global batch ({total}) and world size ({world}) must be positive")
        if micro_batch_size is None:
            if total % world:
                raise ValueError(f"data.batch_size={total} (global) does not split evenly over {world} processes")
            return cls(total, world, total // world, 1)
        micro = int(micro_batch_size)
        if micro < 1 or total % (micro * world):
            raise ValueError(f"data.batch_size={total} (global) is not a multiple of data.micro_batch_size="
                             f"{micro} x {world} processes")
        return cls(total, world, micro, total // (micro * world))


class EpochPermutation(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)``; Lightning sets the epoch (``set_epoch``)
    on the sampler inside a batch sampler."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches, ``plan.accumulate_grad_batches`` per optimizer step. Every epoch is
    ``ceil(n / global_batch)`` steps; the last global batch is filled up by wrapping around the epoch's
    permutation (like ``DistributedSampler``'s padding) unless ``drop_last``, so every optimizer step sees
    exactly ``global_batch`` examples."""

    def __init__(self, lengths: Sequence[int], plan: BatchPlan, rank: int = 0, seed: int = 0,
                 group_by_length: bool = True, drop_last: bool = False) -> None:
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} is outside world size {plan.world_size}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty dataset")
        self.lengths = list(lengths)
        #: what ``micro_batches`` sorts an index by (the row's length; a row index's in SampledRowsBatchSampler)
        self.row_lengths = self.lengths
        self.plan, self.rank = plan, rank
        self.group_by_length, self.drop_last = group_by_length, drop_last
        self.sampler = EpochPermutation(len(self.lengths), seed)
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
        n, b = len(self.lengths), self.plan.global_batch_size
        if self.drop_last and n >= b:
            return n // b
        return math.ceil(n / b)

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches (the same on every rank)."""
        order = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.lengths))
        b = self.plan.global_batch_size
        total = self.steps_per_epoch * b
        order = np.resize(order, total)  # cycles when n is not a multiple (wrap-around fill)
        return [order[i : i + b].tolist() for i in range(0, total, b)]

    def micro_batches(self, global_batch: list[int]) -> list[list[int]]:
        """All ``world_size * accumulate`` micro-batches of one global batch, longest first."""
        if self.group_by_length:
            global_batch = sorted(global_batch, key=lambda i: -self.row_lengths[i])
        m = self.plan.micro_batch_size
        return [global_batch[i : i + m] for i in range(0, len(global_batch), m)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip_steps = self._skip_steps, 0
        for global_batch in self.global_batches()[skip:]:
            micro = self.micro_batches(global_batch)
            # interleave: rank r takes micro-batches r, r + W, ... (balances lengths across ranks)
            yield from micro[self.rank :: self.plan.world_size]

    def __len__(self) -> int:
        # the full epoch, also while resuming: Lightning counts the resumed epoch's batches from its checkpoint
        return self.steps_per_epoch * self.plan.accumulate_grad_batches


class SampledRowsBatchSampler(GlobalBatchSampler):
    """``data.rationales=sample``: an epoch is one row of every group (the rows of one key: an example's, one
    per teacher sample), the row drawn from ``(seed, epoch)`` apart from the epoch's permutation. The epoch, its steps
    and ``resume_at`` are those of :class:`GlobalBatchSampler` over the groups, so a resumed run draws the
    rows the uninterrupted run would have."""

    def __init__(self, keys: Sequence[str], lengths: Sequence[int], plan: BatchPlan, seed: int = 0, **kwargs) -> None:
        groups: dict[str, list[int]] = {}  # each row's key: its example's uid; groups in order of first appearance
        for row, key in enumerate(keys):
            groups.setdefault(key, []).append(row)
        self.groups, self.seed = list(groups.values()), seed
        super().__init__([lengths[g[0]] for g in self.groups], plan, seed=seed, **kwargs)
        self.row_lengths = list(lengths)

    def global_batches(self) -> list[list[int]]:
        # the epoch's row of every group: the same on every rank, in every run with this seed
        sizes = np.array([len(g) for g in self.groups])
        picks = np.random.default_rng([self.seed, self.sampler.epoch, 1]).integers(0, sizes)
        rows = [g[p] for g, p in zip(self.groups, picks.tolist())]
        return [[rows[j] for j in batch] for batch in super().global_batches()]


class EvalBatchSampler(Sampler[list[int]]):
    """Fixed batches for evaluation: longest first (so memory trouble shows at once), no shuffle. With
    several ranks, rank r takes batches r, r + world_size, ...: every example is generated once, and the
    module gathers the predictions of all ranks before scoring."""

    def __init__(self, lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"eval batch size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
