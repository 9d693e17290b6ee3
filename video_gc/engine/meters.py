"""Accuracy arithmetic, multi-view ensembling and running averages."""

from __future__ import annotations

import time

import numpy as np
import torch


def ensemble_views(view_scores: torch.Tensor, method: str) -> torch.Tensor:
    """Combine per-view softmax scores [B, V, K] into video scores [B, K] by ``sum`` or ``max``."""
    if method == "sum":
        return view_scores.sum(dim=1)
    if method == "max":
        return view_scores.max(dim=1).values
    raise ValueError(f"DATA.ENSEMBLE_METHOD: invalid value {method!r}; allowed values: sum, max")


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Per-sample booleans: is the label among the top-k scores, for each k (capped at K classes)."""
    kmax = min(max(ks), scores.shape[-1])
    top = scores.topk(kmax, dim=-1).indices
    hits = top == labels.unsqueeze(-1)
    return [hits[..., : min(k, kmax)].any(dim=-1) for k in ks]


def topk_accuracies(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Top-k accuracies in percent."""
    if labels.numel() == 0:
        return [float("nan")] * len(ks)
    return [100.0 * c.float().mean().item() for c in topk_correct(scores, labels, ks)]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return matrix


def mean_class_accuracy(matrix: np.ndarray) -> float:
    """Mean over the classes that occur of per-class recall, in percent."""
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(100.0 * (np.diag(matrix)[present] / support[present]).mean())


class AverageMeter:
    """Weighted running mean."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Timer:
    """Wall-clock stopwatch: ``reset`` then ``seconds``."""

    def __init__(self):
        self.start = time.perf_counter()

    def reset(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


class TrainMeter:
    """Loss, top-1/top-5, data vs compute time and throughput over one epoch
    (``epoch_*``) and over the current logging window (``window_*``)."""

    def __init__(self):
        self.epoch = self._fresh()
        self.window = self._fresh()

    @staticmethod
    def _fresh() -> dict:
        return {"loss": AverageMeter(), "top1": AverageMeter(), "top5": AverageMeter(),
                "data_time": 0.0, "compute_time": 0.0, "clips": 0}

    def update(self, *, loss: float, top1: float, top5: float, batch: int, data_time: float,
               compute_time: float) -> None:
        for bucket in (self.epoch, self.window):
            bucket["loss"].update(loss, batch)
            bucket["top1"].update(top1, batch)
            bucket["top5"].update(top5, batch)
            bucket["data_time"] += data_time
            bucket["compute_time"] += compute_time
            bucket["clips"] += batch

    @staticmethod
    def summary(bucket: dict, world_size: int = 1) -> dict:
        elapsed = bucket["data_time"] + bucket["compute_time"]
        return {
            "loss": bucket["loss"].avg,
            "top1": bucket["top1"].avg,
            "top5": bucket["top5"].avg,
            "data_time": bucket["data_time"],
            "compute_time": bucket["compute_time"],
            # Every rank sees its own share of the clips; the global rate is the sum.
            "clips_per_s": bucket["clips"] * world_size / elapsed if elapsed > 0 else float("nan"),
        }

    def window_summary(self, world_size: int = 1) -> dict:
        out = self.summary(self.window, world_size)
        self.window = self._fresh()
        return out

    def epoch_summary(self, world_size: int = 1) -> dict:
        return self.summary(self.epoch, world_size)

    def state_dict(self) -> dict:
        """The epoch's and the logging window's running totals as plain numbers (a mid-epoch
        checkpoint carries them)."""
        return {name: {key: [value.total, value.count] if isinstance(value, AverageMeter) else value
                       for key, value in bucket.items()}
                for name, bucket in (("epoch", self.epoch), ("window", self.window))}

    def load_state_dict(self, state: dict) -> None:
        for name, saved in state.items():
            bucket = getattr(self, name)
            for key, value in saved.items():
                if isinstance(bucket[key], AverageMeter):
                    bucket[key].total, bucket[key].count = float(value[0]), int(value[1])
                else:
                    bucket[key] = value
