"""Training input path benchmark behind ``tools/benchmark_data.py --train``.

What one random training clip costs, from the file to its share of the collated
batch, on one thread of one process, for each way of storing the same videos
(a :class:`Storage`):

- the source videos: by default generated Kinetics-like (340x256, 10 s at 30 fps,
  motion, two scene cuts) with x264's defaults, so keyframes come only every 250
  frames and at scene cuts, with B-frames;
- the same videos re-encoded by our resizer with ``--gop N`` (each N asked for), and
  ``--bframes B`` (each B asked for; the name shows a B other than the default);
- the same videos re-encoded with ``--gop 1`` (all-intra: every frame a keyframe),
  for the floor row below.

Rows, on every storage of video files:

- ``ours``: ``VideoDataset(cfg, "train")[i]`` (open, decode, sampling, augmentation,
  normalisation) and the loader's collation, for each decoding backend;
- ``PyTorchVideo``: its ``LabeledVideoDataset`` with a ``RandomClipSampler`` and its
  PyAV decoder, which returns every frame of the clip's window; ``NUM_FRAMES`` of
  them are picked evenly, then the same augmentation and collation as ours;
- ``PySlowFast's way``: :func:`pyslowfast_clip_frames`, our reimplementation of its
  PyAV training decode, then the same augmentation and collation;
- on the all-intra copy only, the floor: open the file, seek to each of the clip's
  frames and decode that frame alone (:func:`decode_exact_frames`), the least
  decoding a clip can cost; and that plus the same augmentation and collation, the
  least a whole training item can cost.

And a frame store of the same videos (:func:`make_frame_store_storage`: every frame a
JPEG image at the frame store's default quality, at the re-encodes' short side), read
by ``DATA.FORMAT frames``: our row, and the JPEG floor: open the store, read and
decode exactly the clip's JPEG images with one ``torchvision.io.decode_jpeg`` call,
nothing else (:func:`decode_clip_jpegs`).

So the rows differ in how the frames are found and decoded; what follows is the
same. Each round runs every row of every storage over every video once (one batch
per row), the rows in a rotating order, so a slow spell of a shared machine hits
all rows and storages alike.
Times are CPU seconds of the process (``time.process_time``, all its threads)
per clip, summarised by the median; ``clips/s`` is the wall-clock rate of the
single-threaded process over all its clips.

A storage that is not a video file per entry (e.g. a frame store, read with
``DATA.FORMAT``) is a :class:`Storage` with its config overrides and
``videos=False``, passed as ``extra_storages``: only our rows run on it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import av
import numpy as np
import torch
import torch.nn.functional as F

from video_gc.data.dataset import VideoDataset, item_generator
from video_gc.data.decoder import FRAME_STORE_EXT, describe_error, read_frame_store_index
from video_gc.data.lists import write_list
from video_gc.data.loader import VideoCollate
from video_gc.data.sampling import train_clip_indices
from video_gc.prep.frame_store import DEFAULT_QUALITY, FrameStoreJob, store_one
from video_gc.prep.resize import DEFAULT_BFRAMES, DEFAULT_SHORT_SIDE, DEFAULT_TUNE, ResizeJob, bframes_text, run_jobs
from video_gc.utils.video_io import VideoWriter

# x264's own keyframe interval: the resizer's --gop for "keyframes as x264 places them".
X264_DEFAULT_GOP = 250
# PySlowFast seeks this many time-base units before the clip's first timestamp.
PYSLOWFAST_SEEK_MARGIN = 1024
FLOOR = "floor: decode only the clip's frames"
FLOOR_ITEM = "floor + the same augmentation and collation"
JPEG_FLOOR = "JPEG floor: read + decode only the clip's JPEGs"
FLOORS = (FLOOR, FLOOR_ITEM, JPEG_FLOOR)
# The generated videos: (blobs across the height, weight) of a picture's detail layers; the weight
# of the see-through second picture; the grain's standard deviation in grey levels. With these, a
# keyframe costs about 6-7 inter frames and a 10 s video about 0.4 MB. (One layer moved by one
# camera is too easy to predict: keyframes cost 15 inter frames and dominate the size cost of --gop.)
TEXTURE_LAYERS = ((4, 0.45), (16, 0.25), (48, 0.2), (128, 0.1))
VEIL = 0.3
GRAIN = 2.0


# ------------------------------------------------------------------ videos
def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> torch.Tensor:
    """Colour noise with about ``cells`` blobs across the height: float [3, H, W]."""
    grid = torch.from_numpy(rng.random((1, 3, cells + 1, int(cells * width / height) + 2))).float()
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0]


def _scene_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured picture, coarse to fine detail: uint8 [H, W, 3]."""
    image = sum(_smooth_noise(rng, height, width, cells) * weight for cells, weight in TEXTURE_LAYERS)
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _camera_path(rng: np.random.Generator, frames: int) -> torch.Tensor:
    """Per-frame affine maps (output -> canvas, normalised coordinates) of a camera that pans,
    zooms and turns a little every frame: float [frames, 2, 3]."""
    t = torch.arange(frames, dtype=torch.float32)
    pan = torch.from_numpy(rng.uniform(-0.006, 0.006, size=2)).float()  # canvas widths per frame
    zoom = 0.6 * torch.exp(float(rng.uniform(-0.01, 0.01)) * t)
    angle = float(rng.uniform(-0.006, 0.006)) * t  # radians per frame
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    start = torch.from_numpy(rng.uniform(-0.1, 0.1, size=2)).float()
    shift_x, shift_y = start[0] + pan[0] * t, start[1] + pan[1] * t
    return torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)


def write_kinetics_like_video(path: str, *, seed: int, seconds: float = 10.0, fps: float = 30.0,
                              height: int = 256, width: int = 340, scenes: int = 3) -> str:
    """A video shaped like a Kinetics clip, encoded with x264's defaults; returns the path.

    ``scenes`` shots (cuts at random frames). In each, a camera pans, zooms and turns
    slowly over a textured picture seen through a second, see-through one that moves
    on its own (as reflections or parallax do: motion no single vector predicts, so
    inter frames cost what they do in real footage); three discs cross it; light
    grain. Encoded with libx264 with no GOP option (keyint 250, scene-cut keyframes,
    3 B-frames), preset medium and CRF 23: x264's defaults.
    """
    rng = np.random.default_rng(seed)
    total = int(round(seconds * fps))
    cuts = sorted(rng.choice(np.arange(int(0.2 * total), int(0.8 * total)), size=scenes - 1, replace=False).tolist())
    bounds = [0, *cuts, total]
    rows, cols = np.mgrid[0:height, 0:width]
    with VideoWriter(path, width, height, fps=fps, crf=23, preset="medium") as writer:
        for start, end in zip(bounds[:-1], bounds[1:]):
            layers = [(torch.from_numpy(_scene_canvas(rng, 2 * height, 2 * width)).permute(2, 0, 1)[None].float(),
                       F.affine_grid(_camera_path(rng, end - start), [end - start, 3, height, width],
                                     align_corners=False)) for _ in range(2)]
            discs = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(-5, 5, size=2),
                      rng.uniform(15, 40), rng.integers(0, 256, size=3, dtype=np.uint8)) for _ in range(3)]
            for i in range(end - start):
                scene, veil = (F.grid_sample(canvas, grids[i:i + 1], mode="bilinear", align_corners=False)
                               for canvas, grids in layers)
                frame = ((1 - VEIL) * scene + VEIL * veil)[0].permute(1, 2, 0).numpy()
                for row, col, speed, radius, colour in discs:
                    centre_row, centre_col = (row + speed[0] * i) % height, (col + speed[1] * i) % width
                    frame[(cols - centre_col) ** 2 + (1.3 * (rows - centre_row)) ** 2 < radius ** 2] = colour
                frame += GRAIN * rng.standard_normal(size=frame.shape, dtype=np.float32)
                writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    return path


def make_kinetics_like_videos(folder: str, count: int, *, seconds: float = 10.0, width: int = 340,
                              height: int = 256) -> list[str]:
    """``count`` Kinetics-like videos in ``folder`` (reused when already there); a size other than
    340x256 is in their names."""
    os.makedirs(folder, exist_ok=True)
    size = "" if (width, height) == (340, 256) else f"_{width}x{height}"
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"kinetics_like_{seconds:g}s{size}_{i:03d}.mp4")
        if not os.path.exists(path):
            write_kinetics_like_video(path, seed=i, seconds=seconds, width=width, height=height)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- storages
@dataclass(frozen=True)
class Storage:
    """One way of storing the benchmark's videos (one block of the table).

    ``paths`` are what a data list names, in the source videos' order; ``opts`` the
    config overrides that reading them needs (``KEY VALUE ...``); ``videos`` False
    for entries that are not video files, which only our rows can read.
    """

    name: str
    paths: tuple[str, ...]
    gop: int | None = None  # the resizer's --gop that wrote it; None for the source
    bframes: str | None = None  # and its --bframes
    opts: tuple[str, ...] = ()
    videos: bool = True
    frame_store: bool = False  # frame-store files: the JPEG floor row is measured on it

    def bytes_per_video(self) -> float:
        """Mean bytes per entry (a folder counts every file under it)."""
        def size(path: str) -> int:
            if os.path.isfile(path):
                return os.path.getsize(path)
            return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)
        return sum(size(p) for p in self.paths) / len(self.paths)


def _sources_key(paths: list[str]) -> str:
    """Names a cache folder for re-encodes of exactly these files (path, size, time)."""
    text = "\n".join(f"{os.path.abspath(p)} {os.path.getsize(p)} {os.path.getmtime(p)}" for p in paths)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def reencode(paths: list[str], folder: str, *, gop: int, short_side: int = DEFAULT_SHORT_SIDE,
             bframes: int | None = DEFAULT_BFRAMES) -> Storage:
    """The videos re-encoded by the resizer with ``gop`` and ``bframes`` into ``folder`` (kept for the next run)."""
    outputs = [os.path.join(folder, f"{i:04d}_{os.path.splitext(os.path.basename(p))[0]}.mp4")
               for i, p in enumerate(paths)]
    jobs = [ResizeJob(src, out, short_side, gop=gop, bframes=bframes) for src, out in zip(paths, outputs)]
    for result in run_jobs(jobs, desc=f"gop {gop}"):
        if result.status not in ("written", "skipped") or result.other_settings:
            raise RuntimeError(f"re-encoding {result.job.source} with gop {gop}: {result.status} {result.reason}")
    name = "resized --gop 1 (all-intra)" if gop == 1 else f"resized --gop {gop}"
    if gop != 1 and bframes != DEFAULT_BFRAMES:
        name += f" --bframes {bframes_text(bframes)}"
    return Storage(name, tuple(outputs), gop=gop, bframes=bframes_text(bframes))


def make_frame_store_storage(paths: list[str], folder: str, *, short_side: int = DEFAULT_SHORT_SIDE,
                             quality: int = DEFAULT_QUALITY) -> Storage:
    """The videos as frame stores in ``folder`` (kept for the next run), read with ``DATA.FORMAT frames``."""
    outputs = [os.path.join(folder, f"{i:04d}_{os.path.splitext(os.path.basename(p))[0]}{FRAME_STORE_EXT}")
               for i, p in enumerate(paths)]
    for src, out in zip(paths, outputs):
        result = store_one(FrameStoreJob(src, out, quality=quality, short_side=short_side))
        if result.status not in ("written", "skipped"):
            raise RuntimeError(f"storing {src} as JPEG frames: {result.status} {result.reason}")
    return Storage(f"frame store (JPEG quality {quality})", tuple(outputs), opts=("DATA.FORMAT", "frames"),
                   videos=False, frame_store=True)


# -------------------------------------------------------------------- rows
@dataclass
class Row:
    """One measured way of making a clip on one storage: ``make(index, round)`` returns a
    train item, collated with the others of its round by ``collate`` (None: a decode-only row)."""

    name: str
    make: Callable[[int, int], dict | None]
    optional: bool = False  # an alternative: a failure is reported, the run goes on
    collate: Callable[[list[dict]], dict] | None = None
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    error: str = ""


def train_augment(dataset: VideoDataset, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The train split's steps after decoding, by ``VideoDataset``'s own code, on uint8 [T, H, W, 3]:
    a clip as the dataset stores it (normalised, or uint8 for the device with ``uint8_clips``)."""
    out = dataset.clip_buffer(1)[0]
    dataset.store_clip(dataset.augment(dataset.decoded_frames(frames), generator), out)
    return out


def _item(inputs: torch.Tensor, index: int) -> dict:
    return {"inputs": inputs, "label": 0, "index": index, "skipped": []}


def pyslowfast_clip_frames(path: str, *, num_frames: int, sampling_rate: int, target_fps: float,
                           generator: torch.Generator) -> torch.Tensor:
    """A random training clip read the way PySlowFast's PyAV decoder reads it (our reimplementation).

    The clip's window spans ``num_frames * sampling_rate`` frames at ``target_fps``.
    When the stream has a duration (an mp4 has), its first and last frames become
    timestamps (duration / frame count per frame); the file is sought to the keyframe
    before the first one minus a margin and decoded until the first frame past the
    last one. Without a duration the whole video is decoded and the window placed in
    it. Every frame kept is converted to RGB; then ``num_frames`` of them are picked
    at evenly spaced positions. Returns uint8 [num_frames, H, W, 3].
    """
    def uniform(high: float) -> float:
        return torch.rand((), generator=generator, dtype=torch.float64).item() * high

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        span = sampling_rate * num_frames / target_fps * fps
        whole = stream.duration is None or not stream.frames
        if whole:
            first_pts, last_pts = 0, math.inf
        else:
            start = uniform(max(stream.frames - span, 0.0))
            per_frame = stream.duration / stream.frames
            first_pts, last_pts = int(start * per_frame), int((start + span - 1) * per_frame)
        container.seek(max(first_pts - PYSLOWFAST_SEEK_MARGIN, 0), stream=stream, backward=True, any_frame=False)
        kept = {}
        for frame in container.decode(stream):
            if frame.pts < first_pts:
                continue
            kept[frame.pts] = frame
            if frame.pts > last_pts:
                break
        frames = torch.from_numpy(np.stack([kept[pts].to_ndarray(format="rgb24") for pts in sorted(kept)]))
    start = uniform(max(len(frames) - span, 0.0)) if whole else 0.0
    pick = torch.linspace(start, start + span - 1, num_frames).clamp(0, len(frames) - 1).long()
    return frames[pick]


def decode_exact_frames(path: str, frame_ids: list[int]) -> np.ndarray:
    """Seek to each frame and decode it alone: uint8 [K, H, W, 3] (exact when every frame is a keyframe)."""
    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        first, per_frame = stream.start_time or 0, 1.0 / float(stream.average_rate) / float(stream.time_base)
        for index in frame_ids:
            pts = first + int(round(index * per_frame))
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            frame = next(f for f in container.decode(stream) if f.pts >= pts - per_frame / 2)
            if abs(frame.pts - pts) > per_frame / 2:
                raise RuntimeError(f"{path}: frame {index} not found at its timestamp (got pts {frame.pts}, not {pts})")
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out)


def decode_clip_jpegs(path: str, pick: Callable[[int, float], list[int]]) -> list[torch.Tensor]:
    """Open a frame store and read its index; ``pick(frame count, fps)`` gives the clip's frame
    numbers, whose JPEG images are read (each once) and decoded with one ``decode_jpeg`` call:
    uint8 [3, H, W] each, in frame order."""
    from torchvision.io import ImageReadMode, decode_jpeg

    fd = os.open(path, os.O_RDONLY)
    try:
        header, offsets = read_frame_store_index(fd, path)
        ids = sorted(set(pick(int(header["num_frames"]), float(header["fps"]))))
        data = [torch.frombuffer(bytearray(os.pread(fd, int(offsets[i + 1] - offsets[i]), int(offsets[i]))),
                                 dtype=torch.uint8) for i in ids]
    finally:
        os.close(fd)
    return decode_jpeg(data, mode=ImageReadMode.RGB)


def pytorchvideo_clips(dataset: VideoDataset) -> tuple[Callable[[int, int], dict] | None, str]:
    """A row function over PyTorchVideo's ``LabeledVideoDataset``, or (None, why it cannot run)."""
    try:
        from pytorchvideo.data import LabeledVideoDataset
        from pytorchvideo.data.clip_sampling import RandomClipSampler
    except Exception as err:  # noqa: BLE001 - whatever breaks the import means "cannot run"
        return None, f"pytorchvideo import failed ({describe_error(err)})"
    clip_seconds = Fraction(dataset.num_frames * dataset.sampling_rate) / Fraction(dataset.target_fps)
    videos = LabeledVideoDataset([(p, {"label": 0}) for p in dataset.paths], RandomClipSampler(clip_seconds),
                                 video_sampler=torch.utils.data.SequentialSampler, decode_audio=False, decoder="pyav")
    state = {}

    def make(index: int, round_index: int) -> dict:
        if index == 0:  # a round is one pass over the videos, in order
            state["clips"] = iter(videos)
        clip = next(state["clips"])
        if clip["video_index"] != index:
            raise RuntimeError(f"PyTorchVideo gave video {clip['video_index']} where {index} was due "
                               "(it skipped a video it could not read)")
        video = clip["video"]  # float [3, T, H, W], 0-255: every frame of the window
        pick = torch.linspace(0, video.shape[1] - 1, dataset.num_frames).long()
        frames = video[:, pick].permute(1, 2, 3, 0).to(torch.uint8)
        return _item(train_augment(dataset, frames, item_generator(dataset.seed, round_index, index)), index)

    return make, ""


def _dataset(cfg, storage: Storage, lists_dir: str, uint8_clips: bool) -> VideoDataset:
    """Our train dataset over ``storage`` (a list naming every entry, label 0)."""
    cfg = cfg.clone()
    cfg.merge_from_list(list(storage.opts))
    folder = os.path.join(lists_dir, hashlib.sha1(storage.name.encode()).hexdigest()[:8])
    os.makedirs(folder, exist_ok=True)
    write_list(os.path.join(folder, "train.csv"), [(os.path.abspath(p), 0) for p in storage.paths])
    cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX = folder, ""
    dataset = VideoDataset(cfg, "train")
    dataset.uint8_clips = uint8_clips
    return dataset


def rows_for(cfg, storage: Storage, lists_dir: str, *, backends: tuple[str, ...], with_pytorchvideo: bool,
             floor: bool, uint8_clips: bool = True) -> tuple[list[Row], dict[str, str]]:
    """The rows measured on ``storage`` (ours first, one per backend), all but the decode-only
    floor collated by the loader's collation; and {row: why it was not run}."""
    rows, not_run = [], {}
    for backend in backends if storage.videos else backends[:1]:  # a non-video storage has its own reader
        cfg_backend = cfg.clone()
        cfg_backend.DATA.DECODING_BACKEND = backend
        dataset = _dataset(cfg_backend, storage, lists_dir, uint8_clips)

        def ours(index: int, round_index: int, dataset=dataset) -> dict:
            dataset.set_epoch(round_index)
            return dataset[index]

        rows.append(Row(f"ours ({dataset.backend})", ours))
    collate = VideoCollate("train", dataset.input_shape)
    for row in rows:
        row.collate = collate
    if storage.frame_store:
        def jpeg_floor(index: int, round_index: int) -> None:
            generator = item_generator(dataset.seed, round_index, index)  # the item's clip

            def pick(length: int, fps: float) -> list[int]:
                return train_clip_indices(length, fps, num_frames=dataset.num_frames,
                                          sampling_rate=dataset.sampling_rate, target_fps=dataset.target_fps,
                                          generator=generator).tolist()

            decode_clip_jpegs(dataset.paths[index], pick)

        rows.append(Row(JPEG_FLOOR, jpeg_floor))
    if not storage.videos:
        return rows, not_run
    if with_pytorchvideo:
        make, why = pytorchvideo_clips(dataset)
        if make is None:
            not_run["PyTorchVideo LabeledVideoDataset"] = why
        else:
            rows.append(Row("PyTorchVideo LabeledVideoDataset", make, optional=True, collate=collate))

    def pyslowfast(index: int, round_index: int) -> dict:
        generator = item_generator(dataset.seed, round_index, index)
        frames = pyslowfast_clip_frames(dataset.paths[index], num_frames=dataset.num_frames,
                                        sampling_rate=dataset.sampling_rate, target_fps=dataset.target_fps,
                                        generator=generator)
        return _item(train_augment(dataset, frames, generator), index)

    rows.append(Row("PySlowFast's way (our reimplementation)", pyslowfast, optional=True, collate=collate))
    if floor:
        def exact(index: int, round_index: int, augment: bool = False) -> dict | None:
            generator = item_generator(dataset.seed, round_index, index)
            with av.open(dataset.paths[index]) as container:
                stream = container.streams.video[0]
                length, fps = stream.frames, float(stream.average_rate)
            ids = train_clip_indices(length, fps, num_frames=dataset.num_frames, sampling_rate=dataset.sampling_rate,
                                     target_fps=dataset.target_fps, generator=generator)
            frames = torch.from_numpy(decode_exact_frames(dataset.paths[index], ids.tolist()))
            return _item(train_augment(dataset, frames, generator), index) if augment else None

        rows.append(Row(FLOOR, exact))
        rows.append(Row(FLOOR_ITEM, functools.partial(exact, augment=True), collate=collate))
    return rows, not_run


def time_rows(rows: list[Row], videos: int, rounds: int) -> None:
    """Fill each row's per-clip CPU and wall seconds: ``rounds`` rounds, each one batch of
    ``videos`` clips per row, the rows (of every storage) in a rotating order, after one untimed
    round on video 0. A clip's time includes its share of its batch's collation."""
    for row in rows:  # warm-up: first calls pay one-off costs (imports, first allocations)
        _run_clip(row, 0, rounds)
    for round_index in range(rounds):
        shift = round_index % len(rows)
        for row in rows[shift:] + rows[:shift]:
            if row.error:
                continue
            items, cpu, wall = [], [], []
            for index in range(videos):
                c0, w0 = time.process_time(), time.perf_counter()
                item = _run_clip(row, index, round_index)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
                if row.error:
                    break
                items.append(item)
            if row.error:
                continue
            c0, w0 = time.process_time(), time.perf_counter()
            if row.collate is not None:
                row.collate(items)
            share_cpu, share_wall = (time.process_time() - c0) / videos, (time.perf_counter() - w0) / videos
            row.cpu += [t + share_cpu for t in cpu]
            row.wall += [t + share_wall for t in wall]


def _run_clip(row: Row, index: int, round_index: int):
    if row.error:
        return None
    try:
        return row.make(index, round_index)
    except Exception as err:  # noqa: BLE001 - an alternative that breaks is reported, ours is not excused
        if not row.optional:
            raise
        row.error = describe_error(err)
        return None


# --------------------------------------------------------------------- run
def prepare_storages(sources: list[str], cache_dir: str, *, gops: tuple[int, ...], source_name: str,
                     short_side: int = DEFAULT_SHORT_SIDE, frame_store: bool = True,
                     bframes: tuple[int | None, ...] = (DEFAULT_BFRAMES,)) -> tuple[list[Storage], Storage]:
    """The timed storages (the source, a re-encode for each of ``gops`` x ``bframes``, the all-intra
    one, the frame store) and the ``--gop 250`` re-encode that only serves as the size reference."""
    folder = os.path.join(cache_dir, "resized", _sources_key(sources))

    def encode(gop: int, b: int | None = DEFAULT_BFRAMES) -> Storage:
        # The folder names every setting, so a cached re-encode made with other defaults is not reused.
        name = f"short{short_side}_gop{gop}_{DEFAULT_TUNE}_b{bframes_text(b)}"
        return reencode(sources, os.path.join(folder, name), gop=gop, short_side=short_side, bframes=b)

    storages = [Storage(source_name, tuple(sources))]
    storages += [encode(gop, b) for gop in dict.fromkeys(gops) if gop != 1 for b in dict.fromkeys(bframes)]
    storages.append(encode(1))
    if frame_store:
        storages.append(make_frame_store_storage(sources, os.path.join(folder, f"frames{short_side}"),
                                                 short_side=short_side))
    return storages, encode(X264_DEFAULT_GOP)


def run_train_benchmark(cfg, sources: list[str], *, cache_dir: str, gops: tuple[int, ...], clips: int,
                        source_name: str, backends: tuple[str, ...] = ("decord", "pyav"),
                        with_pytorchvideo: bool = True, short_side: int = DEFAULT_SHORT_SIDE,
                        frame_store: bool = True, extra_storages: tuple[Storage, ...] = (),
                        uint8_clips: bool = True, bframes: tuple[int | None, ...] = (DEFAULT_BFRAMES,)) -> dict:
    """Every row on every storage; returns the dict that ``--json`` prints.

    ``extra_storages``: more ways of storing the same videos, in the same order (see Storage).
    The first of ``backends`` is "ours" in the ratios. ``uint8_clips``: clips end as a CUDA run's
    loader workers leave them (uint8, normalised on the GPU); False: normalised floats, as on the CPU.
    """
    torch.set_num_threads(1)
    storages, reference = prepare_storages(sources, cache_dir, gops=gops, source_name=source_name,
                                           short_side=short_side, frame_store=frame_store, bframes=bframes)
    storages += list(extra_storages)
    reference_bytes = reference.bytes_per_video()
    with av.open(sources[0]) as container:
        stream = container.streams.video[0]
        source_size = f"{stream.width}x{stream.height}"
    result = {"videos": len(sources), "clips_per_video": clips, "batch": len(sources), "source_size": source_size,
              "clip": f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.SAMPLING_RATE}, crop {cfg.DATA.TRAIN_CROP_SIZE}",
              "clips_end": "uint8, normalised on the GPU (a CUDA run)" if uint8_clips
                           else "normalised floats (a CPU run)",
              "timing": "median process CPU ms per clip (one thread) incl. its share of collation; "
                        "clips/s: wall clock of the single-threaded process",
              "gop250_bytes_per_video": reference_bytes, "not_run": {}, "storages": []}
    with tempfile.TemporaryDirectory() as lists_dir:
        rows = {}
        for storage in storages:
            rows[storage], not_run = rows_for(cfg, storage, lists_dir, backends=backends,
                                              with_pytorchvideo=with_pytorchvideo, floor=storage.gop == 1,
                                              uint8_clips=uint8_clips)
            result["not_run"].update(not_run)
        # All storages in one rotation: a slow spell of the machine hits every storage, not one.
        time_rows([row for block in rows.values() for row in block], len(sources), clips)
    for storage, block in rows.items():
        size = storage.bytes_per_video()
        result["storages"].append({
            "name": storage.name, "gop": storage.gop, "bframes": storage.bframes, "bytes_per_video": size,
            "size_vs_gop250": size / reference_bytes - 1.0 if storage.gop else None,
            "rows": [{"name": row.name, "clips": len(row.cpu), "error": row.error,
                      "cpu_ms": 1000.0 * statistics.median(row.cpu) if row.cpu else None,
                      "wall_clips_per_s": len(row.wall) / sum(row.wall) if row.wall else None}
                     for row in block]})
    return result


def format_train_table(result: dict) -> str:
    """Markdown table of a ``run_train_benchmark`` result, with ours / each row and ours / the floor."""
    lines = [f"training clips ({result['clip']}; every row ends with clips as {result['clips_end']}), "
             f"{result['videos']} videos x {result['clips_per_video']} clips, source {result['source_size']}; "
             f"{result['timing']}",
             "",
             "| storage | MB / video | size vs --gop 250 | row | CPU ms / clip | clips/s per core "
             "| cores for 1,000 clips/s | clips/s (1 process) | ours / row |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    floors, ours = {}, []
    for storage in result["storages"]:
        rows = storage["rows"]
        base = rows[0]["cpu_ms"]
        ours.append((storage["name"], rows[0]["name"], base))
        size = "" if storage["size_vs_gop250"] is None else f"{100 * storage['size_vs_gop250']:+.1f}%"
        for row in rows:
            if row["cpu_ms"] is None:
                lines.append(f"| {storage['name']} | {storage['bytes_per_video'] / 1e6:.3f} | {size} | {row['name']} "
                             f"| n/a | n/a | n/a | n/a | n/a |")
                continue
            ms = row["cpu_ms"]
            if row["name"] in FLOORS:
                floors[row["name"]] = ms
            lines.append(f"| {storage['name']} | {storage['bytes_per_video'] / 1e6:.3f} | {size} | {row['name']} "
                         f"| {ms:.2f} | {1000 / ms:.1f} | {ms:.1f} | {row['wall_clips_per_s']:.1f} "
                         f"| {base / ms:.2f} |")
    lines.append("")
    lines.append(f"size reference: the same videos re-encoded with --gop {X264_DEFAULT_GOP} (x264's own interval): "
                 f"{result['gop250_bytes_per_video'] / 1e6:.3f} MB / video")
    for name, floor_ms in floors.items():
        lines.append(f"ours / {name}: " + "; ".join(f"{storage} {ms / floor_ms:.2f}" for storage, _, ms in ours))
    lines.append("ours / ours on the source: " + "; ".join(f"{storage} {ms / ours[0][2]:.2f}"
                                                          for storage, _, ms in ours[1:]))
    for storage in result["storages"]:
        for row in storage["rows"]:
            if row["error"]:
                lines.append(f"not run to the end: {row['name']} on {storage['name']}: {row['error']}")
    for name, why in result["not_run"].items():
        lines.append(f"not run: {name}: {why}")
    return "\n".join(lines)
