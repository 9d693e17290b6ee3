"""Per-class report and most confused class pairs of a test, from the video scores that
``predictions.npz`` holds, so that every number can be recomputed from that file.

A class's precision is undefined when no video was predicted as it, its recall and top-5
recall when no test video belongs to it: those cells are left empty (None), not 0, so that
an average over classes does not take them for failures. F1 is ``2 TP / (support + predicted)``,
which equals ``2 P R / (P + R)`` where both are defined and is 0 for a class that was never
predicted but occurs (or predicted but never occurs); it is empty only when both counts are 0.
"""

from __future__ import annotations

import csv
import io
from typing import Optional, Sequence

import numpy as np
import torch

from .meters import confusion_matrix, topk_correct

PER_CLASS_COLUMNS = ("class_id", "class_name", "support", "predicted", "precision", "recall", "f1", "top5_recall")
TOP_K = 5
NUM_CONFUSED_PAIRS = 10


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return float(numerator) / float(denominator) if denominator else None


def per_class_report(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One dict per class (keys PER_CLASS_COLUMNS) from video scores [N, K] and true labels [N].

    The prediction is the arg-max of the scores (the first on a tie, as in predictions.npz);
    top-5 recall is the share of the class's videos whose label is among the top min(5, K)
    scores, decided as the test's video top-5 accuracy decides it.
    """
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    if not len(labels) and not scores.size:
        scores = np.zeros((0, num_classes), dtype=np.float32)  # no video evaluated: every class empty
    if scores.ndim != 2 or scores.shape[1] != num_classes or len(labels) != len(scores):
        raise ValueError(f"scores of shape {scores.shape} and {len(labels)} labels do not fit {num_classes} classes")
    predictions = scores.argmax(1) if len(labels) else labels
    matrix = confusion_matrix(labels, predictions, num_classes)
    (in_top,) = topk_correct(torch.from_numpy(scores), torch.from_numpy(labels), ks=(TOP_K,))
    top_hits = np.bincount(labels[in_top.numpy()], minlength=num_classes)
    support, predicted, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    return [{
        "class_id": c,
        "class_name": class_names[c],
        "support": int(support[c]),
        "predicted": int(predicted[c]),
        "precision": _ratio(hits[c], predicted[c]),
        "recall": _ratio(hits[c], support[c]),
        "f1": _ratio(2 * hits[c], support[c] + predicted[c]),
        "top5_recall": _ratio(top_hits[c], support[c]),
    } for c in range(num_classes)]


def per_class_csv(rows: list[dict]) -> str:
    """The rows as CSV text (header PER_CLASS_COLUMNS); shares with 6 decimals, undefined ones empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PER_CLASS_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[k] is None else f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]
                         for k in PER_CLASS_COLUMNS])
    return out.getvalue()


def most_confused_pairs(matrix: np.ndarray, class_names: Sequence[str], top: int = NUM_CONFUSED_PAIRS) -> list[dict]:
    """The ``top`` largest off-diagonal cells of a confusion matrix [true, predicted] with a count > 0,
    largest first (ties: smaller true, then predicted class id first); ``share`` is the count over the
    true class's videos."""
    matrix = np.asarray(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    order = sorted(zip(-off[true, pred], true, pred))[:top]
    support = matrix.sum(1)
    return [{"true": int(t), "true_name": class_names[t], "predicted": int(p), "predicted_name": class_names[p],
             "count": int(-negative), "share": float(-negative / support[t])} for negative, t, p in order]


def format_confused_pairs(pairs: list[dict]) -> str:
    """One line per pair: ``true -> predicted: count (share of the true class)``."""
    if not pairs:
        return "none: no evaluated video was predicted as another class"
    return "\n".join(f"{p['true_name']} ({p['true']}) -> {p['predicted_name']} ({p['predicted']}): {p['count']} "
                     f"({100 * p['share']:.1f}% of {p['true_name']})" for p in pairs)
