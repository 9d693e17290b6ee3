"""Opening a video and counting what decodes, with a reason when it does not."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import av

from video_gc.utils.video_io import display_rotation, upright_size


@dataclass
class VideoInfo:
    """What decoding a file found; ``error`` is empty when the file is usable."""

    path: str
    frames: int = 0
    fps: float = 0.0
    duration: float = 0.0
    width: int = 0
    height: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def probe_video(path: str, decode_all: bool = True) -> VideoInfo:
    """Decode ``path`` with PyAV (every frame, or only the first one).

    Never raises for a bad file: a missing, empty, non-video or truncated file comes
    back with ``error`` set. With ``decode_all=False`` the frame count is the
    container's (cheap) and only the first frame is decoded, which is enough to
    tell a finished output of the resizer from a broken one.
    """
    info = VideoInfo(path)
    if not os.path.isfile(path):
        info.error = "missing"
        return info
    if os.path.getsize(path) == 0:
        info.error = "empty file (0 bytes)"
        return info
    try:
        with av.open(path) as container:
            if not container.streams.video:
                info.error = "no video stream"
                return info
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            info.fps = float(rate) if rate else 0.0
            last_time = None
            first_time = None
            try:
                for frame in container.decode(stream):
                    if info.frames == 0:  # the size the decoders return: upright
                        info.width, info.height = upright_size(frame.width, frame.height,
                                                               display_rotation(stream, frame))
                    info.frames += 1
                    if frame.time is not None:
                        first_time = frame.time if first_time is None else first_time
                        last_time = frame.time
                    if not decode_all:
                        info.frames = max(stream.frames, 1)
                        break
            except (av.error.FFmpegError, ValueError) as err:
                if info.frames == 0:
                    raise
                info.warnings.append(f"decoding stopped after {info.frames} frames ({_reason(err)})")
            if info.frames == 0:
                info.error = "no frames decoded"
                return info
            if decode_all and last_time is not None and info.fps:
                info.duration = last_time - first_time + 1.0 / info.fps
            elif stream.duration and stream.time_base:
                info.duration = float(stream.duration * stream.time_base)
            elif info.fps:
                info.duration = info.frames / info.fps
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as err:
        info.error = f"unreadable ({_reason(err)})"
    return info
