"""Run logging: console + OUTPUT_DIR/log.txt, JSON-lines stats, TensorBoard, tqdm.

Only rank 0 writes files and prints progress; other ranks log warnings and
errors to the console only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys

import torch

from video_gc.utils.io import atomic_write_text

LOGGER_NAME = "video_gc"
_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"


def setup_logging(output_dir: str | None, is_master: bool = True) -> logging.Logger:
    """Configure the ``video_gc`` logger (idempotent: old handlers are replaced)."""
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    console.setLevel(logging.INFO if is_master else logging.WARNING)
    root.addHandler(console)
    if is_master and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, "log.txt"), mode="a")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    return root


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def save_run_config(cfg) -> None:
    """OUTPUT_DIR/config.yaml: the merged config of the run that uses the folder."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated by tensors, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


class StatsWriter:
    """JSON lines to OUTPUT_DIR/stats.jsonl (+ TensorBoard scalars when enabled); no-op off rank 0.

    TensorBoard events are flushed with every record, so a killed run loses no more of them than
    of stats.jsonl. ``purge_step``: a resumed run's first step; TensorBoard drops the events of an
    earlier run from that step on (the work being redone), as :meth:`rewind` does for stats.jsonl:
    its legacy loader by the start marker this writes, its fast loader since each newer point
    replaces a tag's points at the same or later steps.
    """

    def __init__(self, output_dir: str, enabled: bool = True, tensorboard_dir: str | None = None,
                 purge_step: int | None = None):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "stats.jsonl")
        self.tb = None
        if enabled and tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=tensorboard_dir, purge_step=purge_step)

    def write(self, kind: str, stats: dict, step: int | None = None) -> None:
        if not self.enabled:
            return
        record = {"type": kind, **{k: _clean(v) for k, v in stats.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and step is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "iter"):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)
            self.tb.flush()

    def rewind(self, epoch: int, iteration: int) -> int:
        """Drop the training records of the work a resumed run redoes: everything after ``iteration``
        iterations of 0-based ``epoch``. Returns how many were dropped (each step is then in the
        file once, however often the run was interrupted)."""
        if not self.enabled or not os.path.exists(self.path):
            return 0

        def redone(record: dict) -> bool:
            if record.get("type") == "train_iter":
                return (record["epoch"] - 1, record["iter"]) > (epoch, iteration)
            return record.get("type") in ("train_epoch", "val_epoch") and record["epoch"] - 1 >= epoch

        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if not redone(json.loads(line))]
        if len(kept) < len(lines):
            atomic_write_text(self.path, "".join(kept))
        return len(lines) - len(kept)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_stats(output_dir: str) -> list[dict]:
    path = os.path.join(output_dir, "stats.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(iterable, *, total: int, desc: str, enabled: bool):
    """A tqdm bar with ETA on an interactive rank-0 terminal; the bare iterable otherwise."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)
