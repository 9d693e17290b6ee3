"""Writing videos with PyAV (tests, the synthetic dataset, the resizer's fallback), and the
display-rotation rule that every reader of frames (decoders, resizer, probe) follows."""

from __future__ import annotations

import math
import os
from fractions import Fraction

import av
from av.video.frame import PictureType
import numpy as np


def display_rotation(stream, frame) -> int:
    """Clockwise degrees (0, 90, 180 or 270) a player turns ``frame`` of ``stream`` to show it upright.

    Phone videos carry the rotation as a display matrix, which PyAV exposes per frame
    (``frame.rotation``, counter-clockwise). decord, which cannot be told to leave frames
    as stored, applies a stream's legacy ``rotate`` tag first and the matrix only when there
    is no tag, so the same precedence is used here for both backends to agree. The tag
    survives only in containers that keep free-form stream tags (mkv): the FFmpeg inside
    PyAV neither applies it nor writes it into mp4. Other angles are left alone, as decord does.
    """
    degrees = int((rotate_tag(stream) or -frame.rotation) % 360)
    return degrees if degrees in (90, 180, 270) else 0


def rotate_tag(stream) -> float:
    """The stream's legacy ``rotate`` tag in degrees clockwise; 0 when absent or not a number."""
    tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), "")
    try:
        degrees = float(tag)
    except ValueError:
        return 0.0
    return degrees if math.isfinite(degrees) else 0.0


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of a frame once turned by ``rotation`` degrees (and back: the swap is its own inverse)."""
    return (height, width) if rotation in (90, 270) else (width, height)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """An (H, W, C) image turned clockwise by ``rotation`` degrees (a view when 0)."""
    return np.rot90(image, k=-(rotation // 90))


def x264_bframes_params(bframes: int) -> str:
    """x264 settings for ``bframes`` B-frames in a row between reference frames, always that many
    (no adaptive choice) and none of them a reference (no B-pyramid): a reader can skip every
    B-frame it does not want."""
    return f"bframes={bframes}:b-adapt=0:b-pyramid=none"


class VideoWriter:
    """Stream frames into an H.264 (yuv420p, no audio) file, one frame at a time.

    The file is written under a temporary name in the same folder
    (``name.partial.ext``) and renamed on a clean ``close()``, so a crash never
    leaves a partial file at ``path``. Use it as a context manager; an exception
    inside the block discards the temporary file. ``deterministic`` turns off
    x264's macroblock-tree rate control, which otherwise makes repeated encodes of
    the same frames differ now and then (seen on small frames). ``gop`` caps the frames
    between two keyframes (x264 alone: 250, plus scene cuts); ``tune``: an x264 tune
    (``fastdecode``: no CABAC, no deblocking filter); ``bframes``: that many B-frames in a row,
    none a reference (:func:`x264_bframes_params`; None: x264's adaptive choice);
    ``metadata``: container tags.
    """

    def __init__(self, path: str, width: int, height: int, fps: float = 30.0, codec: str = "libx264",
                 crf: int = 18, preset: str = "veryfast", deterministic: bool = False, gop: int | None = None,
                 metadata: dict[str, str] | None = None, tune: str | None = None,
                 bframes: int | None = None):
        if height % 2 or width % 2:
            raise ValueError(f"VideoWriter({path}): height and width must be even, got {height}x{width}")
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        root, ext = os.path.splitext(path)
        self.tmp_path = f"{root}.partial{ext}"
        self.frames = 0
        self._container = av.open(self.tmp_path, mode="w")
        self._container.metadata.update(metadata or {})
        rate = Fraction(fps).limit_denominator(1001)
        self._time_base = Fraction(rate.denominator, rate.numerator)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            params = ["mbtree=0"] if deterministic else []
            if bframes is not None:
                params.append(x264_bframes_params(bframes))
            self._stream.options = {"crf": str(crf), "preset": preset,
                                    **({"x264-params": ":".join(params)} if params else {}),
                                    **({"g": str(gop)} if gop else {}),
                                    **({"tune": tune} if tune else {})}

    def write(self, frame) -> None:
        """Append an RGB uint8 array (H, W, 3) or an ``av.VideoFrame`` of the writer's size."""
        if not isinstance(frame, av.VideoFrame):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        # Constant frame rate: frame i is shown at i / fps, whatever its timestamp in a source.
        frame.pts, frame.time_base = self.frames, self._time_base
        # A decoded frame keeps its type in the source (I, P, B), which x264 would obey: let it choose.
        frame.pict_type = PictureType.NONE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> str:
        """Flush the encoder and move the finished file to ``path``."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (after an error)."""
        try:
            self._container.close()
        except (av.error.FFmpegError, ValueError, OSError):
            pass
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str, frames: np.ndarray, fps: float = 30.0, codec: str = "libx264",
                crf: int = 18, deterministic: bool = False) -> str:
    """Write uint8 frames of shape (T, H, W, 3), RGB, as an H.264 file with no audio.

    H and W must be even (yuv420p). The file is written under a temporary name
    and renamed, so a crash never leaves a partial file at ``path``. With
    ``deterministic`` the same frames always give the same bytes (see VideoWriter).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): need uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    with VideoWriter(path, w, h, fps=fps, codec=codec, crf=crf, deterministic=deterministic) as writer:
        for frame in frames:
            writer.write(frame)
    return path
