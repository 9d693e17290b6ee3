"""Data-pipeline benchmark behind ``tools/benchmark_data.py``.

Measures, on one CPU thread per process and the same videos:

(a) ``limit``: decode every frame of each video once (the decoding floor);
(b) ``ours``: the decode-once 30-view test item (``VideoDataset.decode_views``);
(c) ``per_view``: the PySlowFast way, re-opening and re-decoding the video for
    each of the 30 views (``per_view_views``, same output as (b));
(d) ``pytorchvideo``: PyTorchVideo's ``LabeledVideoDataset`` with a
    ``ConstantClipsPerVideoSampler`` and its own PyAV decoder, our resize/crops
    applied to each clip it yields (``None`` where it cannot run);
(e) training clips/s through ``construct_loader`` for each backend and worker count.

(a)-(d) run in this process on one thread and are timed in CPU seconds of the
process (``time.process_time``), so other jobs competing for the cores inflate
them far less than wall time; (a)-(c) are interleaved per video and summarised
by the median, (d) by the mean over its whole pass.
(e) uses worker processes and is wall-clock time, so it does depend on load.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from fractions import Fraction

import torch

from video_gc.data import transforms as T
from video_gc.data.dataset import VideoDataset
from video_gc.data.decoder import open_video
from video_gc.data.lists import write_list
from video_gc.data.loader import construct_loader, shuffle_loader
from video_gc.data.synthetic_clips import write_textured_video


def make_benchmark_videos(folder: str, count: int, *, seconds: float = 10.0, fps: float = 30.0,
                          height: int = 256, width: int = 340) -> list[str]:
    """Write ``count`` textured synthetic videos (reused when already there)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"bench_{i:03d}.mp4")
        if not os.path.exists(path):
            write_textured_video(path, int(round(seconds * fps)), fps=fps, height=height, width=width, seed=i)
        paths.append(path)
    return paths


def per_view_views(dataset: VideoDataset, index: int) -> torch.Tensor:
    """The naive reference: open and decode the video again for every view (PySlowFast's way)."""
    views = []
    for view in range(dataset.num_clips * dataset.num_crops):
        clip, crop = divmod(view, dataset.num_crops)
        decoder = open_video(dataset.paths[index], dataset.backend)
        try:
            frames = dataset.read_frames(decoder, dataset.eval_frame_ids(decoder)[clip])
        finally:
            decoder.close()
        resized = T.resize_short_side(frames, dataset.test_crop)
        views.append(T.normalize(T.eval_crops(resized, dataset.test_crop, dataset.num_crops)[crop],
                                 dataset.mean, dataset.std))
    return torch.stack(views)


def decode_all_frames(path: str, backend: str) -> int:
    """Decode every frame once, as RGB arrays (the limit (a)); returns the count."""
    if backend == "decord":
        import decord

        reader = decord.VideoReader(path, num_threads=1)
        count = 0
        for start in range(0, len(reader), 64):  # bounded memory, still one sequential pass
            count += reader.get_batch(list(range(start, min(start + 64, len(reader))))).shape[0]
        return count
    import av

    count = 0
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def _timed(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def decode_needed_frames(dataset: VideoDataset, index: int) -> None:
    """Only the decoding part of (b): open once, decode the union of the clips' frames."""
    decoder = open_video(dataset.paths[index], dataset.backend)
    decoder.get_frames(torch.unique(dataset.eval_frame_ids(decoder)))
    decoder.close()


def pytorchvideo_seconds_per_video(dataset: VideoDataset) -> float | None:
    """PyTorchVideo 0.1.5 LabeledVideoDataset, 10 clips x 3 crops per video; None if it cannot run."""
    try:
        from pytorchvideo.data import LabeledVideoDataset
        from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler
    except Exception:  # noqa: BLE001 - any import failure means "could not run"
        return None
    span_s = Fraction(dataset.num_frames * dataset.sampling_rate, int(dataset.target_fps))
    start = time.process_time()
    try:
        pv = LabeledVideoDataset(
            [(p, {"label": 0}) for p in dataset.paths],
            ConstantClipsPerVideoSampler(clip_duration=span_s, clips_per_video=dataset.num_clips),
            video_sampler=torch.utils.data.SequentialSampler, decode_audio=False, decoder="pyav")
        for clip in pv:
            video = clip["video"]  # float [C, T, H, W], 0-255, all frames of the clip window
            pick = torch.linspace(0, video.shape[1] - 1, dataset.num_frames).long()
            resized = T.resize_short_side(video[:, pick].permute(1, 0, 2, 3), dataset.test_crop)
            torch.stack([T.normalize(c, dataset.mean, dataset.std)
                         for c in T.eval_crops(resized, dataset.test_crop, dataset.num_crops)])
    except Exception:  # noqa: BLE001 - a library that breaks at run time also "could not run"
        return None
    return (time.process_time() - start) / len(dataset)


def train_clips_per_second(cfg, backend: str, workers: int, batches: int) -> float:
    """Training clips/s through the real loader (fork workers, random clips and augmentation)."""
    cfg = cfg.clone()
    cfg.DATA.DECODING_BACKEND = backend
    cfg.DATA_LOADER.NUM_WORKERS = workers
    loader = construct_loader(cfg, "train")
    clips, epoch = 0, 0
    start = time.perf_counter()
    while clips < batches * cfg.TRAIN.BATCH_SIZE:
        shuffle_loader(loader, epoch)
        for batch in loader:
            clips += batch["inputs"].shape[0]
            if clips >= batches * cfg.TRAIN.BATCH_SIZE:
                break
        epoch += 1
    return clips / (time.perf_counter() - start)


def run_benchmark(cfg, video_paths: list[str], *, repeats: int = 3, workers=(1, 2),
                  backends=("decord", "pyav"), train_batches: int = 6, with_pytorchvideo: bool = True) -> dict:
    """All five measurements; returns the dict that ``--json`` prints."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as lists:
        # The real dataset classes read the videos, through lists that label them all 0.
        for split in ("train", "test"):
            write_list(os.path.join(lists, f"{split}.csv"), [(os.path.abspath(p), 0) for p in video_paths])
        cfg = cfg.clone()
        cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX = lists, ""
        dataset = VideoDataset(cfg, "test")
        limit, ours, decode_only, per_view = [], [], [], []
        # Untimed warm-up: first calls pay one-off costs (library set-up, first big allocations).
        decode_all_frames(video_paths[0], dataset.backend)
        dataset.decode_views(0)
        for rep in range(repeats):
            for index, path in enumerate(video_paths):
                limit.append(_timed(decode_all_frames, path, dataset.backend))
                ours.append(_timed(dataset.decode_views, index))
                decode_only.append(_timed(decode_needed_frames, dataset, index))
                if rep == 0:  # 30 decodes per video: once is enough for a stable median
                    per_view.append(_timed(per_view_views, dataset, index))
        pv = pytorchvideo_seconds_per_video(dataset) if with_pytorchvideo else None
        cfg.TRAIN.BATCH_SIZE = min(4, len(video_paths))
        train = {b: {str(w): train_clips_per_second(cfg, b, w, train_batches) for w in workers} for b in backends}

    def per_s(times: list[float]) -> float:
        return 1.0 / statistics.median(times)

    return {
        "videos": len(video_paths),
        "views_per_video": dataset.num_clips * dataset.num_crops,
        "backend": dataset.backend,
        "timing": "process CPU seconds per video (a-d; median for a-c); wall clock (e)",
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "limit_videos_per_s": per_s(limit),
        "ours_videos_per_s": per_s(ours),
        "ours_decode_only_videos_per_s": per_s(decode_only),
        "per_view_videos_per_s": per_s(per_view),
        "pytorchvideo_videos_per_s": None if pv is None else 1.0 / pv,
        "train_clips_per_s": train,
    }


def format_table(result: dict) -> str:
    """Markdown table of a ``run_benchmark`` result, with the two target ratios."""
    a, b, c = result["limit_videos_per_s"], result["ours_videos_per_s"], result["per_view_videos_per_s"]
    d = result["pytorchvideo_videos_per_s"]
    views = result["views_per_video"]
    worker_counts = list(next(iter(result["train_clips_per_s"].values())))
    def row(name, speed):
        if speed is None:
            return f"| {name} | n/a | n/a | n/a |"
        return f"| {name} | {speed:.2f} | {1 / speed:.3f} | {a / speed:.2f}x |"

    rows = [
        "| measurement | videos/s | s / video | time vs (a) |",
        "|---|---:|---:|---:|",
        row(f"(a) limit: decode every frame once ({result['backend']})", a),
        row(f"(b) ours: open once, decode once, {views} views", b),
        row("(b) of which opening + decoding the needed frames", result["ours_decode_only_videos_per_s"]),
        row(f"(c) view by view: {views} opens + decodes (PySlowFast)", c),
        row("(d) PyTorchVideo LabeledVideoDataset (PyAV)", d),
        "",
        "| (e) training clips/s | " + " | ".join(f"{w} worker{'' if w == '1' else 's'}" for w in worker_counts) + " |",
        "|---|" + "---:|" * len(worker_counts),
    ]
    rows += [f"| {backend} | " + " | ".join(f"{v:.1f}" for v in by_workers.values()) + " |"
             for backend, by_workers in result["train_clips_per_s"].items()]
    rows += ["", f"targets: (b) vs (c) speed-up {b / c:.1f}x (>= 5x: {'met' if b / c >= 5 else 'MISSED'}); "
             f"(b) time / (a) time {a / b:.2f} (<= 1.5: {'met' if a / b <= 1.5 else 'MISSED'})"]
    return "\n".join(rows)
