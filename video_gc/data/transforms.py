"""Spatial transforms for video clips (PySlowFast's Kinetics recipe).

Frames come from the decoder as ``uint8 [T, H, W, 3]``; every function here
works on ``[T, 3, H, W]`` video tensors with ``torchvision.transforms.v2``'s
functional ops (antialiased resize in uint8, crop, flip, normalize) and all
randomness comes from an explicit ``torch.Generator``, so an item's
augmentation depends only on its seed, not on which worker produced it.

- test: short side -> ``crop_size``, then ``num_crops`` crops of ``crop_size``
  spread along the long side (left/centre/right for landscape,
  top/centre/bottom for portrait; one crop = centre).
- train: random short side in ``jitter_scales`` (uniform, or with
  ``inverse_uniform`` its reciprocal uniform), random ``crop_size`` crop,
  horizontal flip; or, when a relative area range is given (CGD recipe), a
  random-area, random-aspect crop resized to ``crop_size``. Both cut the crop
  from the frame first and resize only it.
- ``normalize``: ``(x / 255 - mean) / std``, returned as ``float [3, T, H, W]``.

Frames laid out as the decoders return them (a [T, 3, H, W] view of
[T, H, W, 3] pixels, "channels last") take torchvision's fast uint8 resize, three
times faster than the same frames channels-first; crops and flips keep the layout.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as F


def to_tchw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [T, 3, H, W] (a view, channels-last in memory)."""
    return frames.permute(0, 3, 1, 2)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [T, 3, H, W] so its short side is ``size`` (long side truncated, keeps aspect)."""
    return F.resize(video, [size], antialias=True)


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, 3, T, H, W] in any memory layout -> contiguous float on the same device, by
    :func:`normalize`'s arithmetic (so the same numbers): what a training step does with batches
    that crossed over as uint8."""
    out = batch.to(torch.float32, memory_format=torch.contiguous_format)
    F.normalize(out.transpose(1, 2), mean=[255.0 * m for m in mean], std=[255.0 * s for s in std], inplace=True)
    return out


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float [3, T, H, W] holding ``(x / 255 - mean) / std``.

    The pixels are converted once into ``out`` (a new tensor if None) and
    normalised there in place, with mean and std scaled by 255 so the division
    by 255 costs no extra pass: a test item is 30 float views (189 MB at
    256x256x8), and every pass over them shows in the decode-once benchmark.
    """
    if out is None:
        out = torch.empty((video.shape[1], video.shape[0], *video.shape[2:]), dtype=torch.float32)
    out.copy_(video.permute(1, 0, 2, 3))
    F.normalize(out.transpose(0, 1), mean=[255.0 * m for m in mean], std=[255.0 * s for s in std], inplace=True)
    return out


def crop_offsets(height: int, width: int, crop_size: int, num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of ``num_crops`` crops spread along the long side, centred across it.

    Position k of n sits at ceil((L - S) * k / (n - 1)) along the long side L, so
    three crops are start / centre / end (PySlowFast ``uniform_crop``), and a
    single crop is the centre.
    """
    if crop_size > min(height, width):
        raise ValueError(f"crop {crop_size} larger than the frame {height}x{width}")

    def spread(length: int) -> list[int]:
        room = length - crop_size
        if num_crops == 1:
            return [math.ceil(room / 2)]
        return [math.ceil(room * k / (num_crops - 1)) for k in range(num_crops)]

    if height > width:  # portrait: top / centre / bottom
        left = math.ceil((width - crop_size) / 2)
        return [(top, left) for top in spread(height)]
    top = math.ceil((height - crop_size) / 2)
    return [(top, left) for left in spread(width)]


def eval_crops(video: torch.Tensor, crop_size: int, num_crops: int) -> list[torch.Tensor]:
    """The spatial test crops of an already resized [T, C, H, W] clip."""
    h, w = video.shape[-2:]
    return [F.crop(video, top, left, crop_size, crop_size)
            for top, left in crop_offsets(h, w, crop_size, num_crops)]


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(high_inclusive: int, generator: torch.Generator) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=generator).item())


def random_short_side_crop(video: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int,
                           generator: torch.Generator, inverse_uniform: bool = False) -> torch.Tensor:
    """Random short side in [min, max], then a random square crop.

    PySlowFast's draw: round(uniform(min, max)), or with ``inverse_uniform``
    (DATA.INV_UNIFORM_SAMPLE) round(1 / uniform(1 / max, 1 / min)), which favours small sizes.
    """
    low, high = float(jitter_scales[0]), float(jitter_scales[1])
    if inverse_uniform:
        size = int(round(1.0 / _uniform(1.0 / high, 1.0 / low, generator)))
    else:
        size = int(round(_uniform(low, high, generator)))
    size = max(size, crop_size)
    h, w = video.shape[-2:]
    # The frame resized to short side ``size`` would be rh x rw (torchvision's rounding); the crop
    # is drawn there, then cut from the frame as it is and resized alone, so the pixels cropped
    # away are never resized.
    rh, rw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    top, left = _randint(rh - crop_size, generator), _randint(rw - crop_size, generator)
    (y, height), (x, width) = _source_window(top, crop_size, h / rh, h), _source_window(left, crop_size, w / rw, w)
    return F.resized_crop(video, y, x, height, width, [crop_size, crop_size], antialias=True)


def _source_window(start: int, length: int, scale: float, limit: int) -> tuple[int, int]:
    """(start, length) in the source of the window [start, start + length) of a copy scaled by 1 / scale."""
    low = min(int(round(start * scale)), limit - 1)
    return low, max(min(int(round((start + length) * scale)), limit) - low, 1)


def random_area_crop(video: torch.Tensor, *, area_range: Sequence[float], aspect_range: Sequence[float],
                     crop_size: int, generator: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """Crop of a random area fraction and log-uniform aspect ratio, resized to ``crop_size``.

    Falls back to the largest centred crop with a clamped aspect ratio when no
    draw fits in the frame (the Inception-style recipe the CGD paper uses).
    """
    h, w = video.shape[-2:]
    area = h * w
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(attempts):
        target = area * _uniform(area_range[0], area_range[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = _randint(h - ch, generator), _randint(w - cw, generator)
            return F.resized_crop(video, top, left, ch, cw, [crop_size, crop_size], antialias=True)
    ratio = w / h
    if ratio < aspect_range[0]:
        cw, ch = w, int(round(w / aspect_range[0]))
    elif ratio > aspect_range[1]:
        ch, cw = h, int(round(h * aspect_range[1]))
    else:
        cw, ch = w, h
    return F.resized_crop(video, (h - ch) // 2, (w - cw) // 2, ch, cw, [crop_size, crop_size], antialias=True)


def random_hflip(video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip left-right with probability 1/2."""
    if torch.rand((), generator=generator).item() < 0.5:
        return F.horizontal_flip(video)
    return video
