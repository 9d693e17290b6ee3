"""Timing shared by the model and block benchmarks: interleaved runs, median per side.

Timings on a shared machine are noisy, so the functions compared run round-robin
after warm-up rounds: a slow spell hits every side instead of one.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

import torch


def set_threads(threads: Optional[int]) -> int:
    """Use ``threads`` intra-op threads (default: every core) and return the count."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def add_timing_args(parser, *, repeats: int, warmup: int) -> None:
    """The clip-size, repeat and device options both benchmark tools share."""
    parser.add_argument("--crop", type=int, default=112, help="square crop size")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default DATA.NUM_FRAMES)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per model (median)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")


def setup_timing(args) -> str:
    """Apply --threads, flush denormals (they slow CPUs by orders of magnitude); return the device."""
    set_threads(args.threads)
    torch.set_flush_denormal(True)
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_timings(
    fns: Dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1, device: torch.device | str = "cpu"
) -> Dict[str, List[float]]:
    """Seconds per call of each function, run round-robin (A B A B ...) ``repeats`` times
    after ``warmup`` untimed rounds. Each round starts one function later (A B C, B C A,
    C A B, ...) so that no function always runs right after the same neighbour."""
    device = torch.device(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times
