"""Temporal sampling: which frame numbers make up each clip (PySlowFast semantics).

A clip is ``num_frames`` frames taken every ``sampling_rate`` frames of a video
resampled to ``target_fps``. In a video at ``fps`` that window spans

    span = num_frames * sampling_rate * fps / target_fps      source frames,

and the clip's frames are ``linspace(start, start + span - 1, num_frames)``
clamped to ``[0, video_frames - 1]`` and truncated to integers (PySlowFast's
``get_start_end_idx`` + ``temporal_sampling``). A video shorter than the span
repeats its last frames instead of failing.

Test clips: ``num_clips`` starts spread uniformly over ``delta = max(n - span, 0)``.
With ``DATA.USE_OFFSET_SAMPLING`` True (video_gc's default),
``start_i = delta * i / (num_clips - 1)`` (the centre, ``delta / 2``, for one
clip), so the first clip starts at frame 0 and the last ends on the last frame:
PySlowFast's offset sampling, without its rounding of the spacing down to whole
frames. With False, PySlowFast's default placement ``start_i = delta * i / num_clips``,
which never reaches the end of the video and puts a single clip at the start.
"""

from __future__ import annotations

import torch


def clip_span(num_frames: int, sampling_rate: int, fps: float, target_fps: float) -> float:
    """Length of one clip in source frames of a video at ``fps``."""
    return num_frames * sampling_rate * fps / target_fps


def clip_frame_indices(start: float, span: float, num_frames: int, video_frames: int) -> torch.Tensor:
    """Frame numbers (long [num_frames]) of the clip that starts at ``start``."""
    end = start + span - 1
    index = torch.linspace(start, end, num_frames, dtype=torch.float64)
    # The epsilon keeps 298.99999999 (floating-point noise in start + span) from truncating to 298.
    return (index + 1e-6).clamp(0, video_frames - 1).long()


def eval_clip_starts(video_frames: int, span: float, num_clips: int, use_offset: bool = True) -> list[float]:
    """Uniformly spaced starts: covering the whole video, or PySlowFast's default without ``use_offset``."""
    delta = max(video_frames - span, 0.0)
    if not use_offset:
        return [delta * i / num_clips for i in range(num_clips)]
    if num_clips == 1:
        return [delta / 2]
    return [delta * i / (num_clips - 1) for i in range(num_clips)]


def eval_clip_indices(video_frames: int, fps: float, *, num_frames: int, sampling_rate: int,
                      target_fps: float, num_clips: int, use_offset: bool = True) -> torch.Tensor:
    """Frame numbers of all test clips: long [num_clips, num_frames]."""
    span = clip_span(num_frames, sampling_rate, fps, target_fps)
    starts = eval_clip_starts(video_frames, span, num_clips, use_offset=use_offset)
    return torch.stack([clip_frame_indices(s, span, num_frames, video_frames) for s in starts])


def train_clip_indices(video_frames: int, fps: float, *, num_frames: int, sampling_rate: int,
                       target_fps: float, generator: torch.Generator) -> torch.Tensor:
    """Frame numbers (long [num_frames]) of a clip at a random position."""
    span = clip_span(num_frames, sampling_rate, fps, target_fps)
    delta = max(video_frames - span, 0.0)
    start = torch.rand((), generator=generator, dtype=torch.float64).item() * delta
    return clip_frame_indices(start, span, num_frames, video_frames)
