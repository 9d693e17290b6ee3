"""Small synthetic videos whose frames say which frame they are.

Used by the data tests and the data benchmark. ``write_indexed_video`` draws
frame i as ``DIGITS`` full-width horizontal bands of flat grey, band k holding
base-8 digit k of i (grey = 32 * digit + 16); flat grey survives H.264 and
YUV 4:2:0 within a few levels, so ``read_frame_index`` recovers i exactly
from a decoded frame, even after resizing or cropping (bands span the width).
``write_textured_video`` makes moving noise, which costs a realistic amount to
decode (flat frames decode unrealistically fast).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from video_gc.utils.video_io import write_video

DIGITS = 4  # up to 8**4 = 4096 frames
_STEP = 32


def indexed_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames encoding their own index in grey bands."""
    if num_frames > 8 ** DIGITS:
        raise ValueError(f"at most {8 ** DIGITS} frames can be encoded, got {num_frames}")
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, height, DIGITS + 1).astype(int)
    for i in range(num_frames):
        for k in range(DIGITS):
            digit = (i // 8 ** k) % 8
            frames[i, edges[k]:edges[k + 1]] = _STEP * digit + _STEP // 2
    return frames


def write_indexed_video(path: str, num_frames: int, *, fps: float = 30.0, height: int = 64,
                        width: int = 96) -> str:
    """Write an H.264 video whose frame i encodes i; returns the path."""
    return write_video(path, indexed_frames(num_frames, height, width), fps=fps)


def read_frame_index(frame: torch.Tensor | np.ndarray, channels_first: bool = False) -> int:
    """The index encoded in one decoded frame, (H, W, 3) or (3, H, W) with ``channels_first``.

    Reads the middle half of every band (away from edges that compression and
    resizing blur) and takes the median grey level. Works on uint8 pixels in [0, 255].
    """
    arr = torch.as_tensor(frame).float()
    if channels_first:
        arr = arr.permute(1, 2, 0)
    height = arr.shape[0]
    edges = np.linspace(0, height, DIGITS + 1)
    index = 0
    for k in range(DIGITS):
        lo, hi = edges[k], edges[k + 1]
        quarter = (hi - lo) / 4
        band = arr[int(lo + quarter): max(int(hi - quarter), int(lo + quarter) + 1)]
        level = float(band.median())
        digit = int(np.clip(round((level - _STEP // 2) / _STEP), 0, 7))
        index += digit * 8 ** k
    return index


def write_textured_video(path: str, num_frames: int, *, fps: float = 30.0, height: int = 256,
                         width: int = 340, seed: int = 0) -> str:
    """Write moving random texture (realistic decode cost); returns the path."""
    rng = np.random.default_rng(seed)
    # Smooth noise (upsampled) moves a few pixels per frame: motion the encoder must code.
    small = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)
    frames = np.stack([np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1))[:height, :width]
                       for i in range(num_frames)])
    return write_video(path, np.ascontiguousarray(frames), fps=fps)


def make_indexed_dataset(root: str, videos: list[tuple[int, float]], *, num_classes: int = 3,
                         height: int = 64, width: int = 96, splits=("train", "val", "test")) -> list[str]:
    """Write ``videos`` = [(num_frames, fps), ...] as indexed videos plus ``{split}.csv`` lists.

    Video i is ``videos/v{i}.mp4`` with label ``i % num_classes``; every split
    lists all videos. Returns the video paths.
    """
    paths, lines = [], []
    for i, (num_frames, fps) in enumerate(videos):
        name = f"videos/v{i}.mp4"
        paths.append(write_indexed_video(os.path.join(root, name), num_frames, fps=fps, height=height, width=width))
        lines.append(f"{name} {i % num_classes}\n")
    for split in splits:
        with open(os.path.join(root, f"{split}.csv"), "w", encoding="utf-8") as handle:
            handle.writelines(lines)
    return paths
