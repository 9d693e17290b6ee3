"""Writing videos as frame stores: every frame a JPEG image, one file per video.

The file format is defined, and read, in :mod:`video_gc.data.decoder` (``DATA.FORMAT
frames``). A store holds the frames the video decoders return for the source (upright,
every frame, same fps and count, so a clip samples the same frame numbers), optionally
resized to a short side first.

``make_frame_store`` converts the videos of one or more ``path label`` lists and writes
the same lists pointing at the stores. Like the resizer (:mod:`video_gc.prep.resize`)
it is resumable and atomic: a store is written under a temporary name
(``name.partial.frames``) and renamed once complete, a store that already exists and
reads back is skipped, and a bad source becomes a ``failed`` result with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np
import torch

from video_gc.data.decoder import (FRAME_STORE, FRAME_STORE_EXT, FRAME_STORE_HEADER, FRAME_STORE_INDEX,
                                   FRAME_STORE_MAGIC, FRAME_STORE_VERSION, VideoDecodeError, describe_error,
                                   open_video)
from video_gc.data.lists import read_list_entries, write_list
from video_gc.prep.lists import PrepError, write_report
from video_gc.prep.parallel import imap_progress
from video_gc.prep.probe import VideoInfo
from video_gc.prep.resize import STATUSES, describe_counts, output_size
from video_gc.utils.video_io import display_rotation, upright, upright_size

DEFAULT_QUALITY = 90
# In a store folder: the settings its stores were written with (JSON).
SETTINGS_FILE = "frame_store_settings.json"
# Frames decoded per batch when a check decodes a whole store (bounds its memory).
_CHECK_CHUNK = 64


@dataclass(frozen=True)
class FrameStoreJob:
    source: str
    output: str
    quality: int = DEFAULT_QUALITY
    short_side: int = 0  # 0 keeps the decoded size


@dataclass
class FrameStoreResult:
    job: FrameStoreJob
    status: str  # written | skipped | missing | failed
    reason: str = ""
    frames: int = 0


def partial_path(output: str) -> str:
    """The temporary name a store is written under until it is complete."""
    root, ext = os.path.splitext(output)
    return f"{root}.partial{ext}"


@contextlib.contextmanager
def _one_thread():
    """Torch's ops on one thread while a video is converted or checked: the worker processes
    give the parallelism, and on a busy machine the intra-op threads of these small copies
    and JPEG calls made a store 30x slower to write (measured: 1.22 s against 0.04 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _header(num_frames: int, width: int, height: int, fps: float, index_offset: int) -> bytes:
    header = np.zeros((), dtype=FRAME_STORE_HEADER)
    header["magic"], header["version"], header["num_frames"] = FRAME_STORE_MAGIC, FRAME_STORE_VERSION, num_frames
    header["width"], header["height"], header["fps"], header["index_offset"] = width, height, fps, index_offset
    return header.tobytes()


def _upright_rgb(container, stream, short_side: int) -> Iterator[np.ndarray]:
    """Every frame as upright RGB (H, W, 3), as the PyAV decoder returns it; with
    ``short_side`` > 0 resized (area) so its short side is that, keeping the aspect ratio."""
    stored = rotation = None
    for frame in container.decode(stream):
        if stored is None:
            rotation = display_rotation(stream, frame)
            width, height = upright_size(frame.width, frame.height, rotation)
            if short_side > 0:
                width, height = output_size(width, height, short_side)
            stored = upright_size(width, height, rotation)  # the size to scale to, before turning
        if (frame.width, frame.height) == stored:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.reformat(width=stored[0], height=stored[1], format="rgb24", interpolation="AREA").to_ndarray()
        yield upright(rgb, rotation)


def write_frame_store(job: FrameStoreJob) -> int:
    """Decode ``job.source`` and write its store to ``job.output``; returns the frame count.

    The JPEG images stream to the temporary file, then the index; the header, written
    last, gives the count and where the index is. Only a complete file is renamed into place.
    """
    from torchvision.io import encode_jpeg

    tmp = partial_path(job.output)
    os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
    try:
        with av.open(job.source) as container, open(tmp, "wb") as out:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if not fps > 0:
                raise ValueError("no frame rate in the video stream")
            out.write(bytes(FRAME_STORE_HEADER.itemsize))
            offsets, height, width = [FRAME_STORE_HEADER.itemsize], 0, 0
            for rgb in _upright_rgb(container, stream, job.short_side):
                height, width = rgb.shape[:2]
                image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
                data = encode_jpeg(image, quality=job.quality).numpy().tobytes()
                out.write(data)
                offsets.append(offsets[-1] + len(data))
            if len(offsets) == 1:
                raise ValueError("no frames decoded")
            out.write(np.asarray(offsets, dtype=FRAME_STORE_INDEX).tobytes())
            out.seek(0)
            out.write(_header(len(offsets) - 1, width, height, fps, offsets[-1]))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, job.output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(offsets) - 1


def probe_frame_store(path: str, decode_all: bool = True) -> VideoInfo:
    """Check a store like ``probe_video`` checks a video: header, index and file size, then
    every frame decoded (or, with ``decode_all=False``, the first and the last). Never raises
    for a bad file: ``error`` says what is wrong."""
    info = VideoInfo(path)
    if not os.path.isfile(path):
        info.error = "missing"
        return info
    try:
        decoder = open_video(path, FRAME_STORE)
    except (VideoDecodeError, OSError) as err:
        info.error = f"unreadable ({describe_error(err)})"
        return info
    info.frames, info.fps = decoder.num_frames, decoder.fps
    info.width, info.height = decoder.width, decoder.height
    info.duration = info.frames / info.fps
    ids = np.arange(info.frames) if decode_all else np.array([0, info.frames - 1])
    try:
        with _one_thread():
            for start in range(0, len(ids), _CHECK_CHUNK):
                decoder.get_frames(ids[start:start + _CHECK_CHUNK])
    except (VideoDecodeError, OSError) as err:
        info.error = f"unreadable ({describe_error(err)})"
    finally:
        decoder.close()
    return info


def store_one(job: FrameStoreJob) -> FrameStoreResult:
    """Run one job; never raises for a bad source (the result says why)."""
    if probe_frame_store(job.output, decode_all=False).ok:
        return FrameStoreResult(job, "skipped")
    if not os.path.isfile(job.source):
        return FrameStoreResult(job, "missing", "source file not found")
    if os.path.getsize(job.source) == 0:
        return FrameStoreResult(job, "failed", "empty file (0 bytes)")
    try:
        with _one_thread():
            frames = write_frame_store(job)
    except (av.error.FFmpegError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as err:
        return FrameStoreResult(job, "failed", describe_error(err))
    return FrameStoreResult(job, "written", frames=frames)


def _store_layout(lists: list[str], sources: list[str], output_dir: str) -> tuple[str, dict[str, str]]:
    """(root, source -> store path): stores mirror the sources below ``root``, the deepest
    folder that holds every list and every source."""
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in lists + sources])
    outputs = {src: os.path.join(output_dir, os.path.splitext(os.path.relpath(src, root))[0] + FRAME_STORE_EXT)
               for src in sources}
    seen: dict[str, str] = {}
    for src, out in outputs.items():
        if out in seen:
            raise PrepError(f"{seen[out]} and {src} would both be stored as {out}")
        seen[out] = src
    return root, outputs


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"


def _settings_text(settings: dict) -> str:
    return f"--quality {settings['quality']}, --short-side {settings['short_side']}"


def _check_settings(output_dir: str, settings: dict) -> None:
    """Record the store settings in ``output_dir`` (SETTINGS_FILE), or refuse a run with other
    ones: a kept store is never re-encoded, so a folder would otherwise mix qualities or sizes.
    The record is created exclusively, so of two runs started together with other settings one stops."""
    path = os.path.join(output_dir, SETTINGS_FILE)
    os.makedirs(output_dir, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        recorded = None
        for _ in range(20):  # another run may be writing it this instant
            try:
                with open(path) as f:
                    recorded = json.load(f)
                break
            except json.JSONDecodeError:
                time.sleep(0.05)
        if not isinstance(recorded, dict) or set(recorded) != set(settings):
            raise PrepError(f"{path} is not a frame-store settings record (it should hold {json.dumps(settings)}); "
                            f"fix or delete it") from None
        if recorded != settings:
            raise PrepError(f"{output_dir} was stored with {_settings_text(recorded)} ({path}); this run asks for "
                            f"{_settings_text(settings)}. A kept store is never re-encoded: choose another "
                            f"--output, or delete that folder to store again") from None
        return
    with os.fdopen(fd, "w") as f:
        json.dump(settings, f)


def make_frame_store(lists: list[str], output_dir: str, *, quality: int = DEFAULT_QUALITY, short_side: int = 0,
                     workers: int = 1, prefix: str = "", separator: str = " ", report: str | None = None,
                     verbose: bool = True) -> dict:
    """Store every video of ``lists`` under ``output_dir`` and write each list there, pointing at the stores.

    The output mirrors the input below the deepest folder holding all lists and videos
    (``data/k400/train.csv`` and ``data/k400/videos/a/b.mp4`` become ``OUT/train.csv`` and
    ``OUT/videos/a/b.frames``). Written lists use paths relative to their own folder (so
    ``DATA.PATH_PREFIX`` stays empty) and leave out the videos that could not be stored,
    which go to the report CSV (default ``OUT/frame_store_report.csv``) with the reason. A
    ``classids.json`` beside a list is copied beside the written list.
    """
    if not 1 <= quality <= 100:
        raise PrepError(f"--quality must be in 1..100, got {quality}")
    if short_side < 0:
        raise PrepError(f"--short-side must be 0 (keep the size) or positive, got {short_side}")
    entries = {path: read_list_entries(path, separator=separator, prefix=prefix, integer_labels=False)
               for path in dict.fromkeys(lists)}
    sources = list(dict.fromkeys(os.path.abspath(e.path) for rows in entries.values() for e in rows))
    root, outputs = _store_layout(list(entries), sources, os.path.abspath(output_dir))
    written_lists = {path: os.path.join(output_dir, os.path.relpath(os.path.abspath(path), root)) for path in entries}
    for path, target in written_lists.items():
        if os.path.abspath(target) == os.path.abspath(path):
            raise PrepError(f"--output {output_dir} would overwrite the list {path}; choose another folder")
    _check_settings(output_dir, {"quality": quality, "short_side": short_side})
    jobs = [FrameStoreJob(src, outputs[src], quality=quality, short_side=short_side) for src in sources]
    start = time.time()
    results = {r.job.source: r for r in imap_progress(store_one, jobs, workers=workers, desc="frame store")}
    stored = {src for src, r in results.items() if r.status in ("written", "skipped")}
    for path, target in written_lists.items():
        folder = os.path.dirname(os.path.abspath(target))
        write_list(target, ((os.path.relpath(outputs[os.path.abspath(e.path)], folder).replace(os.sep, "/"), e.label)
                            for e in entries[path] if os.path.abspath(e.path) in stored), separator=separator)
        classids = os.path.join(os.path.dirname(os.path.abspath(path)), "classids.json")
        if os.path.isfile(classids):
            shutil.copyfile(classids, os.path.join(folder, "classids.json"))
    counts = {status: sum(r.status == status for r in results.values()) for status in STATUSES}
    report = report or os.path.join(output_dir, "frame_store_report.csv")
    write_report(report, ({"split": "", "item": os.path.relpath(r.job.output, output_dir), "source": r.job.source,
                           "status": r.status, "reason": r.reason}
                          for r in results.values() if r.status in ("missing", "failed")))
    store_bytes = sum(os.path.getsize(outputs[src]) for src in stored)
    source_bytes = sum(os.path.getsize(src) for src in stored if os.path.isfile(src))
    summary = {**counts, "videos": len(jobs), "seconds": round(time.time() - start, 2), "report": report,
               "lists": list(written_lists.values()), "store_bytes": store_bytes, "source_bytes": source_bytes}
    if verbose:
        ratio = f"{store_bytes / source_bytes:.2f}x" if source_bytes else "-"
        print(f"frame store (JPEG quality {quality}) in {output_dir}: {describe_counts(counts)} "
              f"({summary['seconds']} s); failures in {report}")
        print(f"  {_size(store_bytes)} for {len(stored)} videos, {ratio} their source files ({_size(source_bytes)})")
        print(f"  lists: {', '.join(summary['lists'])}")
    return summary
