"""Mixup and CutMix of a training batch (MIXUP.*).

Each sample i is paired with sample N-1-i of the same batch (the batch flipped
along its first dimension). With soft targets ``q`` [N, K]:

- mixup: ``x' = lam * x + (1 - lam) * flip(x)``, ``q' = lam * q + (1 - lam) * flip(q)``,
  ``lam ~ Beta(MIXUP.ALPHA, MIXUP.ALPHA)``.
- cutmix: a box of about ``(1 - lam0)`` of the frame area, ``lam0 ~ Beta(CUTMIX_ALPHA,
  CUTMIX_ALPHA)``, centred on a uniform pixel and clipped to the frame, is pasted
  from ``flip(x)`` over every frame of the clip. The target uses the exact area left:
  ``lam = 1 - box_h * box_w / (H * W)``, ``q' = lam * q + (1 - lam) * flip(q)``.

A batch is mixed with probability MIXUP.PROB; when both alphas are positive, cutmix
is chosen with probability MIXUP.SWITCH_PROB, else mixup. The draws use torch's
global generator in the calling process, which the engine seeds and checkpoints,
so a run is reproducible and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixDraw:
    """One batch's random choices: ``kind`` none | mixup | cutmix; ``lam`` the weight of each
    sample's own target; ``box`` (y0, y1, x0, x1), the cutmix region taken from the partner."""

    kind: str
    lam: float = 1.0
    box: tuple[int, int, int, int] | None = None


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * x + (1 - lam) * flip(x)`` for the inputs and for the soft targets."""
    return lam * inputs + (1 - lam) * inputs.flip(0), lam * targets + (1 - lam) * targets.flip(0)


def cutmix(inputs: torch.Tensor, targets: torch.Tensor,
           box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``box`` of the partner clip over all frames (inputs [N, C, T, H, W]); the targets
    mix by the exact area fraction the box leaves to each sample."""
    y0, y1, x0, x1 = box
    mixed = inputs.clone()
    mixed[..., y0:y1, x0:x1] = inputs.flip(0)[..., y0:y1, x0:x1]
    lam = box_lam(box, *inputs.shape[-2:])
    return mixed, lam * targets + (1 - lam) * targets.flip(0)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box of about ``(1 - lam) * height * width`` pixels (side ratio sqrt(1 - lam)) around a
    uniformly drawn centre, clipped to the frame."""
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = (int(torch.randint(n, ()).item()) for n in (height, width))
    y0, x0 = max(cy - cut_h // 2, 0), max(cx - cut_w // 2, 0)
    y1, x1 = min(cy - cut_h // 2 + cut_h, height), min(cx - cut_w // 2 + cut_w, width)
    return y0, y1, x0, x1


def box_lam(box: tuple[int, int, int, int], height: int, width: int) -> float:
    """The fraction of the frame a cutmix ``box`` leaves to the sample itself."""
    y0, y1, x0, x1 = box
    return 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


def _beta(alpha: float) -> float:
    return float(torch.distributions.Beta(alpha, alpha).sample())


class Mixer:
    """Draws and applies mixup / cutmix per batch, as MIXUP.* says (see module doc)."""

    def __init__(self, *, alpha: float, cutmix_alpha: float, prob: float, switch_prob: float) -> None:
        self.alpha, self.cutmix_alpha = alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @classmethod
    def from_cfg(cls, cfg) -> "Mixer":
        m = cfg.MIXUP
        return cls(alpha=m.ALPHA, cutmix_alpha=m.CUTMIX_ALPHA, prob=m.PROB, switch_prob=m.SWITCH_PROB)

    def draw(self, height: int, width: int) -> MixDraw:
        """The random choices for one batch of ``height`` x ``width`` frames."""
        if float(torch.rand(())) >= self.prob:
            return MixDraw("none")
        use_cutmix = self.cutmix_alpha > 0 and (self.alpha <= 0 or float(torch.rand(())) < self.switch_prob)
        if use_cutmix:
            box = cutmix_box(height, width, _beta(self.cutmix_alpha))
            return MixDraw("cutmix", lam=box_lam(box, height, width), box=box)
        return MixDraw("mixup", lam=_beta(self.alpha))

    @staticmethod
    def apply(draw: MixDraw, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``inputs`` [N, C, T, H, W] and soft ``targets`` [N, K] as ``draw`` says."""
        if draw.kind == "mixup":
            return mixup(inputs, targets, draw.lam)
        if draw.kind == "cutmix":
            return cutmix(inputs, targets, draw.box)
        return inputs, targets

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(self.draw(*inputs.shape[-2:]), inputs, targets)
