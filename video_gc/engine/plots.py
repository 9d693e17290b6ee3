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


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str) -> str:
    """Row-normalised confusion matrix (true class per row) with counts in small grids."""
    plt = _pyplot()
    n = matrix.shape[0]
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros(matrix.shape, dtype=float), where=support > 0)
    side = min(max(6.0, 0.45 * n + 4.0), 40.0)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (rows normalised)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
