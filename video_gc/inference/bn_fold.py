"""BatchNorm folding.

In eval mode a BatchNorm is the per-channel affine map
``y = gamma * (x - mean) / sqrt(var + eps) + beta`` (Ioffe & Szegedy, Alg. 2), so a
conv followed by it is one conv with scaled kernels and a bias.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm):
    """(scale, shift) per channel with ``bn(x) == x * scale + shift`` in eval mode."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
    return scale, shift


def fold_batchnorm(conv: nn.Conv3d, bn: Optional[nn.modules.batchnorm._BatchNorm]):
    """(weight, bias) of the single conv equal to ``bn(conv(x))`` in eval mode."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                                       device=weight.device)
    if bn is None:
        return weight.clone(), bias.clone()
    scale, shift = batchnorm_affine(bn)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), bias * scale + shift
