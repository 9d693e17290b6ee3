"""Writing videos with PyAV (tests, the synthetic dataset, the resizer's fallback)."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_video(path: str, frames: np.ndarray, fps: float = 30.0, codec: str = "libx264",
                crf: int = 18) -> str:
    """Write uint8 frames of shape (T, H, W, 3), RGB, as an H.264 file with no audio.

    H and W must be even (yuv420p). The file is written under a temporary name
    and renamed, so a crash never leaves a partial file at ``path``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): need uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_video({path}): height and width must be even, got {h}x{w}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext}"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
