"""Tiny real videos and broken files for the data-prep tests."""

import os

import av
import numpy as np

from video_gc.utils.video_io import write_video


def ramp_video(path, num_frames=12, width=64, height=48, fps=10.0, base=0):
    """A 64x48 video whose frame i is flat grey level base + 10 i (easy to identify after a resize)."""
    levels = (base + 10 * np.arange(num_frames)) % 250
    frames = np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).astype(np.uint8)
    return write_video(str(path), np.ascontiguousarray(frames), fps=fps)


def frame_levels(path):
    """Mean grey level of each decoded frame, rounded."""
    with av.open(str(path)) as container:
        return [int(round(f.to_ndarray(format="rgb24").mean())) for f in container.decode(video=0)]


def stream_info(path):
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {"fps": float(s.average_rate), "width": s.codec_context.width, "height": s.codec_context.height,
                "codec": s.codec_context.name, "audio": len(container.streams.audio),
                "frames": sum(1 for _ in container.decode(video=0))}


def broken_files(folder):
    """A zero-byte file, a text file named .mp4 and a real mp4 cut in half; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    zero = os.path.join(folder, "zero.mp4")
    open(zero, "wb").close()
    text = os.path.join(folder, "text.mp4")
    with open(text, "w") as f:
        f.write("this is not a video\n" * 20)
    full = ramp_video(os.path.join(folder, "full_tmp.mp4"), num_frames=20)
    data = open(full, "rb").read()
    os.remove(full)
    trunc = os.path.join(folder, "trunc.mp4")
    with open(trunc, "wb") as f:
        f.write(data[: len(data) // 2])
    return {"zero": zero, "text": text, "trunc": trunc}
