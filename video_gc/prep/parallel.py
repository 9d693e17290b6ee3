"""A process pool with a progress bar (tqdm shows the rate and the ETA)."""

from __future__ import annotations

import multiprocessing
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def imap_progress(func: Callable[[T], R], items: Sequence[T], workers: int = 1, desc: str = "",
                  unit: str = "video") -> Iterator[R]:
    """Yield ``func(item)`` for every item, in completion order, with a progress bar.

    ``workers <= 1`` runs in this process (no pickling, easy to debug). Workers are
    spawned, not forked: the caller may hold threads (torch, decoders) that a fork
    would copy in a locked state.
    """
    bar = tqdm(total=len(items), desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield func(item)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes=min(workers, len(items))) as pool:
            for result in pool.imap_unordered(func, items, chunksize=1):
                yield result
                bar.update(1)
    finally:
        bar.close()
