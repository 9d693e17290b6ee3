"""Samplers and helpers that make every test video count exactly once across ranks.

``ShardedEvalSampler`` gives rank r the indices r, r + W, r + 2W, ... With
``pad=False`` (the default) every index goes to exactly one rank and shards
differ in length by at most one. With ``pad=True`` it repeats the first
indices so all ranks get the same count (like ``DistributedSampler``); the
duplicates are then removed by index with ``dedup_by_index`` after gathering.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


class ShardedEvalSampler(Sampler[int]):
    """Deterministic, unshuffled shard of ``range(num_items)`` for one rank."""

    def __init__(self, num_items: int, *, num_replicas: int = 1, rank: int = 0, pad: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.num_items, self.num_replicas, self.rank, self.pad = num_items, num_replicas, rank, pad

    def _indices(self) -> list[int]:
        indices = list(range(self.num_items))
        if self.pad:
            total = math.ceil(self.num_items / self.num_replicas) * self.num_replicas
            indices += indices[: total - self.num_items]
        return indices[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def dedup_by_index(indices: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keep the first row for every dataset index, sorted by index.

    ``indices`` long [N] (gathered over ranks, possibly with padding repeats);
    each tensor in ``tensors`` has N rows. Returns (indices, *tensors) reduced
    to one row per distinct index.
    """
    indices = indices.reshape(-1).cpu()
    order = torch.argsort(indices, stable=True)
    sorted_idx = indices[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    keep = order[first]
    return (indices[keep],) + tuple(t[keep.to(t.device)] for t in tensors)


class TrainSampler(Sampler[int]):
    """The epoch's shuffled order, dealt to the ranks one global batch at a time, from any point.

    The order is ``torch.randperm`` seeded by (seed + epoch), the same on every rank. Global
    batch j is positions [j * B, (j + 1) * B) of it (B = ``batch_size`` x ``num_replicas``);
    rank r takes every ``num_replicas``-th of them from the r-th on. An epoch has
    ``len(order) // B`` global batches; the remainder is dropped, never padded with repeats.
    ``set_epoch(epoch, start_batch=k)`` starts at global batch k, so a run resumed mid-epoch
    reads exactly the samples that were still due, with any number of ranks for the same B.
    """

    def __init__(self, num_items: int, *, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.num_items, self.batch_size, self.num_replicas, self.rank = num_items, batch_size, num_replicas, rank
        self.seed, self.epoch, self.start_batch = seed, 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // (self.batch_size * self.num_replicas)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)
        span = self.batch_size * self.num_replicas
        due = order[self.start_batch * span: self.batches_per_epoch * span]
        return iter(due[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
