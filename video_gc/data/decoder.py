"""Video decoders that open a file once and return only the frames asked for.

``open_video(path, backend)`` gives a decoder with ``fps``, ``num_frames`` and
``get_frames(indices)``. ``indices`` is any 1-D sequence of frame numbers; the
decoder decodes each distinct frame once and returns ``uint8 [K, H, W, 3]`` in
the order asked. Memory stays bounded by the frames asked for, never by the
video's length, which is what the decode-once test path relies on.

Frames come upright, as a player shows them: a video with a display rotation
(phone videos) is turned by it, so both backends give the same frames and
frame size (see ``video_gc.utils.video_io.display_rotation``).

``open_video(path, "frames")`` reads a frame store instead (``DATA.FORMAT
frames``): one file per video holding its frames as JPEG images, written by
``data_prep/make_frame_store.py``. Layout, all integers little-endian:

- a 40-byte header (``FRAME_STORE_HEADER``): magic ``VGCJPEGS``, format version,
  frame count, width, height, fps (float64) and the byte offset of the index;
- the JPEG images of frames 0..N-1, back to back;
- the index: N + 1 uint64 byte offsets, frame i being bytes [offset[i], offset[i + 1]),
  the last offset being where the index starts. The file ends with the index, so
  a truncated file never matches its header.

A clip reads only the byte ranges of its frames and decodes them in one batched
``torchvision.io.decode_jpeg`` call.

Every failure (missing, empty, truncated, undecodable file) is raised as
``VideoDecodeError`` naming the file, so datasets can skip or record it.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Sequence

import numpy as np
import torch

from video_gc.utils.video_io import display_rotation, upright

from .lists import FRAME_STORE_EXTENSION

BACKENDS = ("decord", "pyav")
# Codecs whose packets hold exactly one frame each, so unwanted ones can be skipped by timestamp.
SKIPPABLE_CODECS = ("h264", "hevc")
# Frames an AVI file is sought ahead of the first wanted one (more than MPEG-4's B-frames in a row).
AVI_SEEK_MARGIN = 4
# The reader of frame-store files (DATA.FORMAT frames), opened like a backend.
FRAME_STORE = "frames"
FRAME_STORE_EXT = FRAME_STORE_EXTENSION
FRAME_STORE_MAGIC = b"VGCJPEGS"
FRAME_STORE_VERSION = 1
FRAME_STORE_HEADER = np.dtype([("magic", "S8"), ("version", "<u4"), ("num_frames", "<u4"), ("width", "<u4"),
                               ("height", "<u4"), ("fps", "<f8"), ("index_offset", "<u8")])
FRAME_STORE_INDEX = np.dtype("<u8")


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode video {path}: {reason}")
        self.path = path
        self.reason = reason


def describe_error(err: BaseException) -> str:
    """'Type: first line of the message' (the reason recorded for a failed video)."""
    if isinstance(err, VideoDecodeError):
        return err.reason
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


def _unique_sorted(indices: Sequence[int] | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Distinct indices (sorted) and, for every requested index, its row in them."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("get_frames needs at least one frame index")
    return np.unique(idx, return_inverse=True)


def _in_requested_order(frames: torch.Tensor, inverse: np.ndarray) -> torch.Tensor:
    """The distinct frames as requested (repeats included); no copy when that is each once, in order."""
    if len(inverse) == len(frames) and (inverse == np.arange(len(inverse))).all():
        return frames
    return frames[torch.from_numpy(inverse)]


class DecordDecoder:
    """decord ``VideoReader`` with one thread (workers give the parallelism).

    decord turns rotated videos upright itself, by the rule ``display_rotation`` states.
    """

    def __init__(self, path: str):
        _check_file(path)
        import decord

        self.path = path
        try:
            self._reader = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as err:  # decord raises its own DECORDError and RuntimeError
            raise VideoDecodeError(path, describe_error(err)) from err
        if self.num_frames <= 0 or not math.isfinite(self.fps) or self.fps <= 0:
            raise VideoDecodeError(path, f"no decodable video frames (frames={self.num_frames}, fps={self.fps})")

    def get_frames(self, indices) -> torch.Tensor:
        uniq, inverse = _unique_sorted(indices)
        uniq = np.clip(uniq, 0, self.num_frames - 1)
        try:
            frames = self._reader.get_batch(uniq.tolist()).asnumpy()
        except Exception as err:
            raise VideoDecodeError(self.path, describe_error(err)) from err
        return _in_requested_order(torch.from_numpy(frames), inverse)

    def close(self) -> None:
        self._reader = None


class PyAVDecoder:
    """PyAV decoder on one thread: seek once before the first wanted frame, decode forward.

    Between the keyframe and the last wanted frame, a frame that is neither
    wanted nor a reference for other frames (most B-frames) is not decoded at
    all: the decoder's ``skip_frame`` is set to ``NONREF`` for its packet. That
    cannot change any other frame, and on x264's default B-frame layout it
    leaves out 40-45% of the frames a training clip used to decode. Packets are matched to frame
    numbers by timestamp, so this is done for H.264 and HEVC outside AVI only,
    whose packets hold one frame each and carry its presentation time.

    AVI files: frames are numbered from the first frame's timestamp (AVI's start
    time is a decoding time), seeks start a few frames early, and when a seek
    gives frames out of timestamp order (H.264 in AVI, whose timestamps FFmpeg
    makes up) the video is decoded from its start and its frames counted.

    The frame count comes from the container header (``stream.frames``) or,
    when that is missing, from duration x fps; both can be wrong, so a wanted
    index past the last frame actually decoded is clamped to that frame. PyAV
    returns frames as stored, so each is turned by its display rotation here.
    """

    def __init__(self, path: str):
        _check_file(path)
        import av

        self.path = path
        try:
            self._container = av.open(path)
            if not self._container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = self._container.streams.video[0]
            stream.thread_count = 1  # loader workers give the parallelism, as with decord
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            self._stream = stream
            self._time_base = float(stream.time_base) if stream.time_base else 0.0
            avi = self._container.format.name == "avi"
            self._start_pts = _avi_first_pts(*_file_key(path)) if avi else stream.start_time or 0
            # AVI seeks by decoding time, which B-frames put behind the frames shown: seek a few frames early.
            self._seek_margin = AVI_SEEK_MARGIN if avi else 0
            self.num_frames = int(stream.frames or 0) or self._estimate_frames()
            # AVI has no presentation timestamps for H.264: FFmpeg makes them up, so never skip by them.
            self.skip_unwanted = stream.codec_context.name in SKIPPABLE_CODECS and not avi
            self._timestamps_ok = True  # False once a seek gave frames out of timestamp order
            self.frames_decoded = 0  # a running count: what skipping saves shows in it
        except VideoDecodeError:
            raise
        except Exception as err:
            raise VideoDecodeError(path, describe_error(err)) from err
        if self.num_frames <= 0 or self.fps <= 0:
            raise VideoDecodeError(path, f"no decodable video frames (frames={self.num_frames}, fps={self.fps})")

    def _estimate_frames(self) -> int:
        if self._stream.duration and self._time_base:
            seconds = self._stream.duration * self._time_base
        elif self._container.duration:
            seconds = self._container.duration / 1_000_000  # av.time_base: microseconds
        else:
            return 0
        return int(round(seconds * self.fps))

    def _frame_index(self, frame) -> int:
        if frame.pts is None or not self._time_base:
            return -1
        return int(round((frame.pts - self._start_pts) * self._time_base * self.fps))

    def _decode_range(self, wanted: set[int], last: int, seek_to: int | None,
                      skip: bool = False) -> dict[int, np.ndarray]:
        """Wanted frames up to index ``last``, decoded forward after a seek (or from the start).

        The last frame decoded is always kept, so indices past the real end of
        the video can be clamped to it. With ``skip`` (only after a seek, where
        frames are numbered by timestamp), unwanted non-reference frames are not decoded.
        """
        container, stream = self._container, self._stream
        codec = stream.codec_context
        if seek_to:
            target = self._start_pts + int((seek_to - self._seek_margin) / self.fps / self._time_base)
        else:
            target = stream.start_time or 0
        container.seek(target, stream=stream, backward=True, any_frame=False)
        kept, tail, counter, done = {}, None, 0, False
        try:
            for packet in container.demux(stream):
                if skip:
                    needed = packet.pts is None or self._frame_index(packet) in wanted
                    codec.skip_frame = "DEFAULT" if needed else "NONREF"
                for frame in packet.decode():
                    # After a seek the index comes from the timestamp; from the start, counting is exact.
                    idx = self._frame_index(frame) if seek_to else counter
                    counter += 1
                    self.frames_decoded += 1
                    if tail is not None and idx < tail[0]:
                        # Timestamps out of display order (made up, as for H.264 in AVI): only counting
                        # from the start numbers these frames right.
                        self._timestamps_ok = False
                        return {}
                    if idx in wanted:
                        kept[idx] = frame
                    tail = (idx, frame)
                    done = idx >= last or len(kept) == len(wanted)
                    if done:
                        break
                if done:
                    break
        finally:
            codec.skip_frame = "DEFAULT"
        if tail is not None and tail[0] not in kept:
            kept[tail[0]] = tail[1]
        return {i: upright(f.to_ndarray(format="rgb24"), display_rotation(stream, f)) for i, f in kept.items()}

    def get_frames(self, indices) -> torch.Tensor:
        uniq, inverse = _unique_sorted(indices)
        uniq = np.clip(uniq, 0, self.num_frames - 1)
        first, last = int(uniq[0]), int(uniq[-1])
        wanted = set(uniq.tolist())
        try:
            decoded = {}
            if first > self._seek_margin and self._time_base and self._timestamps_ok:
                decoded = self._decode_range(wanted, last, seek_to=first, skip=self.skip_unwanted)
            if not decoded or min(decoded) > first:
                # The seek overshot or timestamps are unusable: decode from the start.
                decoded = self._decode_range(wanted, last, seek_to=None)
        except Exception as err:
            raise VideoDecodeError(self.path, describe_error(err)) from err
        if not decoded:
            raise VideoDecodeError(self.path, f"no frame decoded in [{first}, {last}]")
        have = sorted(decoded)
        rows = []
        for i in uniq.tolist():
            if i not in decoded:
                # The header over-estimated the length: use the nearest earlier decoded frame.
                i = have[max(int(np.searchsorted(have, i, side="right")) - 1, 0)]
            rows.append(decoded[i])
        return torch.from_numpy(np.stack([rows[k] for k in inverse.tolist()]))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _read_exact(fd: int, path: str, size: int, offset: int, what: str, into: memoryview | None = None) -> bytes:
    """``size`` bytes at ``offset``, returned, or read straight into ``into`` (then b"")."""
    if into is None:
        data = os.pread(fd, size, offset)
        got = len(data)
    else:
        data, got = b"", os.preadv(fd, [into], offset)
    if got != size:
        raise VideoDecodeError(path, f"truncated: {what} needs bytes [{offset}, {offset + size}), "
                                     f"the file ends at {offset + got}")
    return data


def read_frame_store_index(fd: int, path: str) -> tuple[np.void, np.ndarray]:
    """(header, offsets) of an open frame-store file, checked against each other and the file size."""
    size = os.fstat(fd).st_size
    if size < FRAME_STORE_HEADER.itemsize:
        raise VideoDecodeError(path, f"truncated: {size} bytes, shorter than the {FRAME_STORE_HEADER.itemsize}-byte "
                                     f"frame-store header")
    header = np.frombuffer(os.pread(fd, FRAME_STORE_HEADER.itemsize, 0), dtype=FRAME_STORE_HEADER)[0]
    if header["magic"] != FRAME_STORE_MAGIC:
        raise VideoDecodeError(path, f"not a frame-store file (starts with {bytes(header['magic'])!r}); "
                                     f"DATA.FORMAT frames reads the files of data_prep/make_frame_store.py")
    if header["version"] != FRAME_STORE_VERSION:
        raise VideoDecodeError(path, f"frame-store version {header['version']}, this video_gc reads version "
                                     f"{FRAME_STORE_VERSION}")
    num_frames, fps, start = int(header["num_frames"]), float(header["fps"]), int(header["index_offset"])
    if num_frames <= 0 or not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(path, f"no decodable video frames (frames={num_frames}, fps={fps})")
    expected = start + (num_frames + 1) * FRAME_STORE_INDEX.itemsize
    if size != expected:
        raise VideoDecodeError(path, f"truncated or corrupt: {size} bytes, the header says {expected}")
    offsets = np.frombuffer(_read_exact(fd, path, expected - start, start, "the index"), dtype=FRAME_STORE_INDEX)
    if (offsets[0] != FRAME_STORE_HEADER.itemsize or offsets[-1] != start
            or not (np.diff(offsets.astype(np.int64)) > 0).all()):
        raise VideoDecodeError(path, "corrupt frame-store index (offsets out of order or outside the data)")
    return header, offsets.astype(np.int64)


class FrameStoreDecoder:
    """Frames of a frame-store file (see the module docstring): reads only the JPEG
    images asked for and decodes them in one batched ``decode_jpeg`` call, on the CPU."""

    def __init__(self, path: str):
        _check_file(path)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            header, self._offsets = read_frame_store_index(self._fd, path)
        except BaseException:
            self.close()
            raise
        self.num_frames, self.fps = int(header["num_frames"]), float(header["fps"])
        self.width, self.height = int(header["width"]), int(header["height"])

    def get_frames(self, indices) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        uniq, inverse = _unique_sorted(indices)
        uniq = np.clip(uniq, 0, self.num_frames - 1)
        starts, ends = self._offsets[uniq], self._offsets[uniq + 1]
        buffer = bytearray(int((ends - starts).sum()))
        cuts = np.concatenate([[0], np.cumsum(ends - starts)]).tolist()
        view = memoryview(buffer)
        for k, start in enumerate(starts.tolist()):
            _read_exact(self._fd, self.path, cuts[k + 1] - cuts[k], start, f"frame {uniq[k]}",
                        into=view[cuts[k]:cuts[k + 1]])
        data = torch.frombuffer(buffer, dtype=torch.uint8)
        try:
            images = decode_jpeg([data[cuts[k]:cuts[k + 1]] for k in range(len(uniq))], mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as err:
            # torchvision's message is "decode_jpeg, <source file:line>, <reason>": keep the reason.
            reason = str(err).splitlines()[0].rsplit(", ", 1)[-1] if str(err) else type(err).__name__
            raise VideoDecodeError(self.path, f"corrupt JPEG among the {len(uniq)} frames read ({uniq[0]} to "
                                              f"{uniq[-1]}): {reason}") from err
        for k, image in enumerate(images):
            if image.shape != (3, self.height, self.width):
                raise VideoDecodeError(self.path, f"frame {uniq[k]} is {image.shape[2]}x{image.shape[1]}, "
                                                  f"the header says {self.width}x{self.height}")
        # decode_jpeg's images are [3, H, W] views of H, W, 3 pixels: stacking those views is one plain
        # copy (stacking the views as [3, H, W] would transpose every pixel), in the requested order.
        return torch.stack([images[k].permute(1, 2, 0) for k in inverse.tolist()])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _file_key(path: str) -> tuple[str, int, int]:
    """(path, size, modification time): what the per-file caches below are keyed by."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=65536)
def _avi_first_pts(path: str, size: int, mtime_ns: int) -> int:
    """The first frame's timestamp, once per file and process. AVI's start time is the first
    packet's decoding time, which B-frames put one frame before the first frame shown."""
    import av

    with av.open(path) as container:
        for frame in container.decode(video=0):
            return frame.pts or 0
    return 0


@functools.lru_cache(maxsize=65536)
def _reorders_frames(path: str, size: int, mtime_ns: int, packets: int = 32) -> bool:
    """Whether a video's first packets come out of display order (B-frames); False if unreadable.
    Asked once per file and process."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            for k, packet in enumerate(container.demux(stream)):
                if k == packets:
                    break
                if packet.pts is not None and packet.dts is not None and packet.pts != packet.dts:
                    return True
    except Exception:  # noqa: BLE001 - the chosen decoder reports what is wrong with the file
        return False
    return False


def reader_for(cfg) -> str:
    """The ``open_video`` backend of a config: the frame-store reader when DATA.FORMAT says frames."""
    return FRAME_STORE if cfg.DATA.FORMAT == "frames" else cfg.DATA.DECODING_BACKEND


def open_video(path: str, backend: str = "pyav"):
    """Open ``path`` with ``backend`` ("decord" or "pyav"), or a frame-store file with
    ``FRAME_STORE``; raises VideoDecodeError."""
    if backend == FRAME_STORE:
        return FrameStoreDecoder(path)
    if backend in BACKENDS and path.endswith(FRAME_STORE_EXT):
        raise VideoDecodeError(path, "a frame-store file: set DATA.FORMAT frames to read it")
    if backend == "decord":
        if path.lower().endswith(".avi") and os.path.isfile(path) and _reorders_frames(*_file_key(path)):
            # decord returns other frames than asked from AVI files with B-frames (measured: every frame
            # of a sought MPEG-4 clip wrong); PyAV returns the right ones.
            return PyAVDecoder(path)
        return DecordDecoder(path)
    if backend == "pyav":
        return PyAVDecoder(path)
    raise ValueError(f"unknown decoding backend '{backend}', choose from {BACKENDS + (FRAME_STORE,)}")
