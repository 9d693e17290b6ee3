"""PNG figures written at the end of training and testing (matplotlib, Agg backend)."""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(records: list[dict], path: str) -> str | None:
    """Loss, accuracy and LR per epoch from the ``train_epoch`` / ``val_epoch`` stats records."""
    train = [r for r in records if r.get("type") == "train_epoch"]
    if not train:
        return None
    val = [r for r in records if r.get("type") == "val_epoch"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = [r["epoch"] for r in train]
    axes[0].plot(epochs, [r["loss"] for r in train], marker="o", label="train")
    if val:
        axes[0].plot([r["epoch"] for r in val], [r["loss"] for r in val], marker="s", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [r["top1"] for r in train], marker="o", label="train top-1")
    if val:
        axes[1].plot([r["epoch"] for r in val], [r["top1"] for r in val], marker="s", label="val top-1")
    axes[1].set_title("accuracy (%)")
    # Each logged iteration's LR sits at the fractional epoch it was computed for.
    lr_points = sorted((r["epoch"] - 1 + (r["iter"] - 1) / r["iters"], r["lr"]) for r in records
                       if r.get("type") == "train_iter" and r.get("iters"))
    if lr_points:
        axes[2].plot(*zip(*lr_points), marker=".", label="logged iterations")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# Above this many classes the matrix shows only the most confused ones: 400 unlabelled rows say nothing.
MAX_CONFUSION_CLASSES = 40


def confusion_classes(matrix: np.ndarray, max_classes: int = MAX_CONFUSION_CLASSES) -> np.ndarray:
    """The classes the confusion figure shows: all of them (in order) up to ``max_classes``; else the
    ``max_classes`` with the most off-diagonal mass (videos of the class predicted as another, plus
    videos of other classes predicted as it), most first, ties by class id."""
    n = matrix.shape[0]
    if n <= max_classes:
        return np.arange(n)
    off = matrix - np.diag(np.diag(matrix))
    mass = off.sum(axis=0) + off.sum(axis=1)
    return np.lexsort((np.arange(n), -mass))[:max_classes]


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str,
                          max_classes: int = MAX_CONFUSION_CLASSES) -> str:
    """Row-normalised confusion matrix (true class per row) with class names and counts; above
    ``max_classes`` classes, the rows and columns of the most confused classes (confusion_classes),
    still normalised by each true class's full count of videos."""
    plt = _pyplot()
    n = matrix.shape[0]
    shown = confusion_classes(matrix, max_classes)
    support = matrix.sum(axis=1, keepdims=True)[shown]
    counts = matrix[np.ix_(shown, shown)]
    normalised = np.divide(counts, support, out=np.zeros(counts.shape, dtype=float), where=support > 0)
    labels = [class_names[c] for c in shown]
    k = len(shown)
    side = max(6.0, 0.45 * k + 4.0)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k < n:
        ax.set_title(f"confusion of the {k} most confused of {n} classes\n"
                     f"(rows normalised over all {n} classes; the rest are in per_class.csv)")
    else:
        ax.set_title("confusion (rows normalised)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
