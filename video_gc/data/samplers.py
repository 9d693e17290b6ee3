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
