"""Inflating 2D convolution kernels into 3D (Carreira & Zisserman, I3D, Sec. 2.4).

A k x k kernel W becomes a t x k x k kernel W3 so that, on a video whose frames
are all the same image, the 3D convolution gives the 2D response at every frame
(away from the temporal zero padding):

- ``average``: W3[:, :, i] = W / t for every i. The sum over the t taps is W.
  Frames within t // 2 of either end see zero padding and get (taps inside
  the video) / t of the response, so those frames differ.
- ``center``: W3[:, :, t // 2] = W, zeros elsewhere. The same response at every
  frame, padding included (the middle tap lines up with padding t // 2).
"""

from __future__ import annotations

import torch

INFLATE_MODES = ("average", "center")


def can_inflate(source_shape: torch.Size, target_shape: torch.Size) -> bool:
    """True when ``source`` is a 2D kernel (or a 3D kernel with t = 1) for the 3D ``target``."""
    if len(target_shape) != 5:
        return False
    if len(source_shape) == 4:
        spatial = tuple(source_shape)
    elif len(source_shape) == 5 and source_shape[2] == 1:
        spatial = (source_shape[0], source_shape[1], source_shape[3], source_shape[4])
    else:
        return False
    return spatial == (target_shape[0], target_shape[1], target_shape[3], target_shape[4]) and (
        tuple(source_shape) != tuple(target_shape)
    )


def inflate_kernel(weight: torch.Tensor, time: int, mode: str = "average") -> torch.Tensor:
    """[O, I, k, k] (or [O, I, 1, k, k]) -> [O, I, time, k, k] by ``average`` or ``center``."""
    if mode not in INFLATE_MODES:
        raise ValueError(f"inflate mode {mode!r}; allowed values: {', '.join(INFLATE_MODES)}")
    if weight.dim() == 5:
        if weight.shape[2] != 1:
            raise ValueError(f"can only inflate a kernel with temporal size 1, got shape {list(weight.shape)}")
        weight = weight[:, :, 0]
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D conv kernel [O, I, kh, kw], got shape {list(weight.shape)}")
    if time < 1:
        raise ValueError(f"temporal size must be >= 1, got {time}")
    if mode == "average":
        return weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time
    out = weight.new_zeros(weight.shape[0], weight.shape[1], time, *weight.shape[2:])
    out[:, :, time // 2] = weight
    return out
