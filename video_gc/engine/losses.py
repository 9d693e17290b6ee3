"""The training loss (MODEL.LOSS_FUNC), its targets, and the labels training accuracy counts.

For logits ``z`` [N, K] and labels ``y``:

- ``cross_entropy``: ``L = mean_i -log softmax(z_i)[y_i]``, hard labels.
- ``soft_cross_entropy``: ``L = mean_i sum_k -q_ik log softmax(z_i)_k`` with soft targets
  ``q = (1 - s) * onehot(y) + s / K`` (label smoothing, ``s = MIXUP.LABEL_SMOOTH_VALUE``:
  the true class gets ``1 - s + s / K``, every other ``s / K``), then mixed by mixup /
  cutmix (``video_gc.engine.mixup``) when MIXUP.ENABLE.

Training top-1 / top-5 count against the hard label ``y`` for ``cross_entropy`` and against
``argmax_k q_ik`` for soft targets: the label itself under smoothing alone, the dominant one of
the pair after mixing (``lam >= 0.5``: the sample's own). Validation always scores the hard
labels with plain cross entropy, so its loss is comparable between runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .mixup import Mixer


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(1 - smoothing) * onehot(labels) + smoothing / num_classes``, float [N, K]."""
    one_hot = F.one_hot(labels, num_classes).float()
    return (1.0 - smoothing) * one_hot + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k -targets_ik * log_softmax(logits_i)_k``."""
    return (-targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class TrainObjective:
    """What a training step optimises: :meth:`prepare` turns a batch's labels into targets (and
    mixes the inputs), :meth:`loss` scores logits against them, :meth:`accuracy_labels` gives
    the labels top-k accuracy counts (see module doc)."""

    def __init__(self, *, loss_func: str, num_classes: int, smoothing: float, mixer: Mixer | None) -> None:
        if loss_func not in ("cross_entropy", "soft_cross_entropy"):
            raise ValueError(f"MODEL.LOSS_FUNC: unsupported value {loss_func!r}; allowed: cross_entropy, "
                             f"soft_cross_entropy")
        if mixer is not None and loss_func != "soft_cross_entropy":
            raise ValueError("MIXUP.ENABLE needs MODEL.LOSS_FUNC soft_cross_entropy (mixed targets are soft)")
        self.soft = loss_func == "soft_cross_entropy"
        self.num_classes, self.smoothing, self.mixer = num_classes, smoothing, mixer

    @classmethod
    def from_cfg(cls, cfg) -> "TrainObjective":
        return cls(loss_func=cfg.MODEL.LOSS_FUNC, num_classes=cfg.MODEL.NUM_CLASSES,
                   smoothing=cfg.MIXUP.LABEL_SMOOTH_VALUE, mixer=Mixer.from_cfg(cfg) if cfg.MIXUP.ENABLE else None)

    def prepare(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets): the labels themselves for cross_entropy; smoothed, then mixed, soft targets."""
        if not self.soft:
            return inputs, labels
        targets = smooth_one_hot(labels, self.num_classes, self.smoothing)
        return self.mixer(inputs, targets) if self.mixer is not None else (inputs, targets)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, targets) if self.soft else F.cross_entropy(logits, targets)

    def accuracy_labels(self, targets: torch.Tensor) -> torch.Tensor:
        return targets.argmax(dim=1) if self.soft else targets
