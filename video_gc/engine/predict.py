"""Classify videos with a trained model (tools/demo_net.py): one file, a folder or a list,
whole videos or sliding windows.

A whole video goes through the test pipeline of the data package (all
``NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS`` views, decoded once); its views' softmax
scores are combined with ``DATA.ENSEMBLE_METHOD``. With sliding windows every window
gets one clip, placed inside the window the way the val split places its centre clip
in a video, with the val centre crop; its scores are that clip's softmax.

Exit status of ``main_predict``: 0 every video classified; 1 an error stopped the run or no
video could be classified (a single ``--video`` that cannot be read says why in one line);
2 a config error; 3 the run finished but skipped videos it could not read (each named on
stderr; the CSV holds the others).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as du
from .common import (EngineError, class_names, load_test_weights, model_config_from_checkpoint, prepare_model,
                     resolve_test_checkpoint, warn_if_preprocessing_differs)
from .logger import get_logger, progress
from .meters import ensemble_views
from video_gc.data.decoder import FRAME_STORE, reader_for
from video_gc.inference import prepare_for_inference

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_SKIPPED = 0, 1, 2, 3
_NOT_FOUND = "file not found"


class VideoInputError(EngineError):
    """The video to classify is missing or cannot be decoded."""


def video_problem(path: str, reader: str = "pyav") -> str | None:
    """Why ``path`` is not a decodable video, in a few words; None when it is one.

    PyAV probes the file: it reports a bad one as an exception and prints nothing, where decord
    (the default backend) also writes FFmpeg's and its own C++ messages to stderr, out of Python's
    reach. Redirecting the process's stderr around decord instead would also swallow whatever any
    other thread writes meanwhile, and still leave the reason to dig out of the noise."""
    from video_gc.data import VideoDecodeError, open_video

    if os.path.isdir(path):
        return "it is a folder; give a video file"
    if not os.path.isfile(path):
        return _NOT_FOUND
    try:
        # PyAV probes any video (its errors carry the reason); a frame store needs its own reader.
        decoder = open_video(path, reader if reader == FRAME_STORE else "pyav")
        try:
            decoder.get_frames([0])
        finally:
            decoder.close()
    except VideoDecodeError as err:
        return f"it is not a readable video ({err.reason})"
    return None


def check_video(path: str, reader: str = "pyav") -> None:
    """Refuse anything but a decodable video, in one line, before the model loads."""
    problem = video_problem(path, reader)
    if problem == _NOT_FOUND:
        raise VideoInputError(f"video not found: {path}")
    if problem:
        raise VideoInputError(f"cannot classify {path}: {problem}")


def dataset_over(cfg, paths: Sequence[str], split: str = "test", cls=None):
    """The data package's ``split`` dataset (``cls``, default VideoDataset) over ``paths``, labelled 0,
    so every file gets exactly the sampling and crops the config gives that split."""
    from video_gc.data import VideoDataset

    with tempfile.TemporaryDirectory(prefix="video_gc_predict_") as folder:
        # A list file: the dataset reads it once, here; the paths may contain the separator.
        with open(os.path.join(folder, f"{split}.csv"), "w", encoding="utf-8") as f:
            f.writelines(f"{os.path.abspath(p)}{cfg.DATA.PATH_LABEL_SEPARATOR}0\n" for p in paths)
        one = cfg.clone()
        one.defrost()
        one.DATA.PATH_TO_DATA_DIR, one.DATA.PATH_PREFIX = folder, ""
        return (cls or VideoDataset)(one, split)


class ReadableVideos(Dataset):
    """The test items of ``dataset``, each file first probed by :func:`video_problem`: a bad file
    becomes a failed item with PyAV's one-line reason, without the decoder's noise on stderr."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.input_shape = dataset.input_shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        problem = video_problem(self.dataset.paths[index], self.dataset.backend)
        if problem:
            return {"inputs": None, "label": 0, "index": index, "failed": (index, self.dataset.paths[index], problem)}
        return self.dataset[index]


def views_loader(cfg, dataset, indices: Sequence[int], batch_size: int) -> DataLoader:
    """Batches of the test items ``indices`` of ``dataset`` in that order, decoded by
    DATA_LOADER.NUM_WORKERS workers; failed items are listed under ``"failed"``."""
    from video_gc.data.loader import VideoCollate, seed_worker

    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    return DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=workers,
                      collate_fn=VideoCollate("test", dataset.input_shape),
                      pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
                      worker_init_fn=seed_worker if workers > 0 else None)


def load_trained_model(cfg, weights: str, opts: Sequence[str], dist_info: du.DistInfo):
    """(config, model): the network the checkpoint ``weights`` holds (its stored model config, but for
    the keys set in ``opts``), its weights loaded strictly, on ``dist_info.device``."""
    cfg = model_config_from_checkpoint(cfg, weights, opts)
    model = prepare_model(cfg, dist_info)
    load_test_weights(cfg, model, weights)
    if dist_info.is_master:
        warn_if_preprocessing_differs(cfg, weights, "pass the training config with --cfg")
    return cfg, model


def run_device(cfg) -> torch.device:
    """The device of a single-process run: CUDA when NUM_GPUS > 0 and one is visible, else the CPU."""
    return torch.device("cuda") if du.use_cuda(cfg) else torch.device("cpu")


@dataclass
class Classifier:
    """A trained model ready to score clips, with its config and class names."""

    cfg: object
    weights: str
    model: nn.Module  # clips [N, 3, T, H, W] -> float32 logits, on any device
    names: list
    load_seconds: float

    def video_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores [B, K] of B videos' views [B, V, 3, T, S, S]: the views' softmax ensembled by
        DATA.ENSEMBLE_METHOD, divided by V for ``sum`` (so they stay in [0, 1])."""
        b, v = inputs.shape[:2]
        probs = torch.softmax(self.model(inputs.flatten(0, 1)), dim=-1).view(b, v, -1).cpu()
        scores = ensemble_views(probs, self.cfg.DATA.ENSEMBLE_METHOD)
        return scores / v if self.cfg.DATA.ENSEMBLE_METHOD == "sum" else scores

    def top(self, scores: torch.Tensor, k: int) -> list[tuple[str, float]]:
        top = scores.topk(min(k, scores.numel()))
        return [(self.names[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]


def load_classifier(cfg, checkpoint: str | None = None, opts: Sequence[str] = ()) -> Classifier:
    """The checkpoint's model (default: TEST.CHECKPOINT_FILE_PATH, else the newest in OUTPUT_DIR) in
    TEST.INFERENCE_MODE on the config's device."""
    start = time.time()
    if checkpoint:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.CHECKPOINT_FILE_PATH = checkpoint
    device = run_device(cfg)
    weights = resolve_test_checkpoint(cfg)
    cfg, model = load_trained_model(cfg, weights, opts, du.DistInfo(device=device))
    fast = prepare_for_inference(model, cfg.TEST.INFERENCE_MODE, device)
    return Classifier(cfg, weights, fast, class_names(cfg), time.time() - start)


def _decode_views(cfg, video_path: str) -> torch.Tensor:
    """All test views of one file, [V, 3, T, S, S], through the data package's test dataset."""
    item = dataset_over(cfg, [video_path])[0]
    if item["failed"] is not None:
        raise VideoInputError(f"cannot classify {video_path}: {item['failed'][2]}")
    return item["inputs"]


@torch.inference_mode()
def predict_video(cfg, video_path: str, checkpoint: str | None = None, top_k: int = 5, opts=()) -> dict:
    """Top-k (class name, score) for one video (scores as :meth:`Classifier.video_scores`). Also
    returns the weights used and the seconds taken. The model is the one the checkpoint stores the
    config of, but for the keys set in ``opts``."""
    start = time.time()
    check_video(video_path, reader_for(cfg))
    classifier = load_classifier(cfg, checkpoint, opts)
    views = _decode_views(classifier.cfg, video_path)
    scores = classifier.video_scores(views.unsqueeze(0))[0]
    return {
        "video": video_path,
        "checkpoint": classifier.weights,
        "views": views.shape[0],
        "top": classifier.top(scores, top_k),
        "seconds": time.time() - start,
        "load_seconds": classifier.load_seconds,
    }


def format_prediction(result: dict) -> str:
    width = max(len(name) for name, _ in result["top"])
    lines = [f"{result['video']} ({result['views']} views, weights {result['checkpoint']}):"]
    lines += [f"  {rank}. {name:<{width}}  {score:.4f}" for rank, (name, score) in enumerate(result["top"], start=1)]
    lines.append(f"time: {result['seconds']:.2f} s (model and weights {result['load_seconds']:.2f} s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Many videos: one CSV row per video
# ---------------------------------------------------------------------------
def top_k_header(k: int) -> list[str]:
    return [f"{what}_{rank}" for rank in range(1, k + 1) for what in ("label", "score")]


def _top_cells(top: list[tuple[str, float]]) -> list[str]:
    return [cell for name, score in top for cell in (name, f"{score:.6f}")]


@torch.inference_mode()
def classify_videos(classifier: Classifier, paths: Sequence[str], *, top_k: int,
                    write_row: Callable[[list], None]) -> list[tuple[str, str]]:
    """Write ``[path, label_1, score_1, ...]`` for every readable video of ``paths``, in their order,
    with the scores :func:`predict_video` gives; returns the (path, reason) of the others."""
    dataset = ReadableVideos(dataset_over(classifier.cfg, paths))
    loader = views_loader(classifier.cfg, dataset, range(len(paths)), batch_size=classifier.cfg.TEST.BATCH_SIZE)
    failed = []
    for batch in progress(loader, total=len(loader), desc="predict", enabled=True):
        failed += [(paths[index], reason) for index, _, reason in batch["failed"]]
        if batch["indices"].numel():
            for index, scores in zip(batch["indices"].tolist(), classifier.video_scores(batch["inputs"])):
                write_row([paths[index], *_top_cells(classifier.top(scores, top_k))])
    return failed


# ---------------------------------------------------------------------------
# Sliding windows: one CSV row per window
# ---------------------------------------------------------------------------
def window_starts(duration: float, window: float, stride: float) -> list[float]:
    """Start seconds of the windows ``[start, start + window)`` that slide by ``stride`` from 0 while
    they fit in ``duration``: ``floor((duration - window) / stride) + 1`` of them. The tail after the
    last window, shorter than ``stride``, gets no window of its own. A video shorter than ``window``
    gets one window from 0 (its clip repeats its last frames, as for any short video)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    if duration <= window:
        return [0.0]
    # The epsilon keeps a last window that ends exactly on the end from being lost to rounding.
    count = math.floor((duration - window) / stride + 1e-9) + 1
    return [k * stride for k in range(count)]


def window_frame_ids(start: float, window: float, *, video_frames: int, fps: float, num_frames: int,
                     sampling_rate: int, target_fps: float) -> torch.Tensor:
    """Frame numbers (long [num_frames]) of the clip of the window ``[start, start + window)`` seconds:
    the val split's centre clip of that stretch of the video."""
    from video_gc.data.sampling import clip_frame_indices, clip_span, eval_clip_starts

    span = clip_span(num_frames, sampling_rate, fps, target_fps)
    first = start * fps
    length = min(window * fps, video_frames - first)
    offset = eval_clip_starts(length, span, num_clips=1, use_offset=True)[0]
    return clip_frame_indices(first + offset, span, num_frames, video_frames)


def clip_seconds(cfg) -> float:
    """Seconds of video one clip spans: DATA.NUM_FRAMES x DATA.SAMPLING_RATE / DATA.TARGET_FPS."""
    return cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE / cfg.DATA.TARGET_FPS


def _window_dataset_class():
    from video_gc.data import VideoDataset

    class WindowClips(VideoDataset):
        """The val pipeline (short side and centre crop TEST_CROP_SIZE, decoded once) for the clips at
        ``frame_ids`` (long [clips, num_frames]), set before each ``decode_views``."""

        frame_ids: torch.Tensor

        def eval_frame_ids(self, decoder) -> torch.Tensor:
            return self.frame_ids

    return WindowClips


def _video_windows(cfg, path: str, window: float, stride: float) -> tuple[float, list[float], torch.Tensor]:
    """(duration in seconds, window starts, frame numbers long [windows, DATA.NUM_FRAMES]) of the file
    at ``path``, opened as DATA.FORMAT / DATA.DECODING_BACKEND say; raises VideoDecodeError."""
    from video_gc.data import open_video

    decoder = open_video(path, reader_for(cfg))
    video_frames, fps = decoder.num_frames, decoder.fps
    decoder.close()
    duration = video_frames / fps
    starts = window_starts(duration, window, stride)
    ids = torch.stack([window_frame_ids(s, window, video_frames=video_frames, fps=fps, num_frames=cfg.DATA.NUM_FRAMES,
                                        sampling_rate=cfg.DATA.SAMPLING_RATE, target_fps=cfg.DATA.TARGET_FPS)
                       for s in starts])
    return duration, starts, ids


@torch.inference_mode()
def classify_windows(classifier: Classifier, paths: Sequence[str], *, window: float, stride: float, top_k: int,
                     write_row: Callable[[list], None]) -> list[tuple[str, str]]:
    """Write ``[path, start_s, end_s, label_1, score_1, ...]`` for every window (:func:`window_starts`)
    of every readable video of ``paths``; returns the (path, reason) of the others. The windows of a
    video run in passes of as many clips as one test video has views (a batch the test already fits
    in memory), each pass decoding its frames once; a video's rows are written once all its windows
    are scored."""
    from video_gc.data import VideoDecodeError
    from video_gc.data.decoder import describe_error

    cfg = classifier.cfg
    dataset = dataset_over(cfg, paths, split="val", cls=_window_dataset_class())
    per_pass = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    failed = []
    for index in progress(range(len(paths)), total=len(paths), desc="windows", enabled=True):
        problem, probs = video_problem(paths[index], dataset.backend), []
        if problem is None:
            try:
                duration, starts, ids = _video_windows(cfg, dataset.paths[index], window, stride)
            except VideoDecodeError as err:
                problem = err.reason
        for first in range(0, len(starts), per_pass) if problem is None else ():
            dataset.frame_ids = ids[first:first + per_pass]
            try:
                clips = dataset.decode_views(index)
            except Exception as err:  # a file that breaks part-way: reported and skipped, never a crash
                problem = describe_error(err)
                break
            probs.append(torch.softmax(classifier.model(clips), dim=-1).cpu())
        if problem is not None:
            failed.append((paths[index], problem))
            continue
        for start, scores in zip(starts, torch.cat(probs)):
            write_row([paths[index], f"{start:.3f}", f"{min(start + window, duration):.3f}",
                       *_top_cells(classifier.top(scores, top_k))])
    return failed


# ---------------------------------------------------------------------------
# tools/demo_net.py
# ---------------------------------------------------------------------------
def input_videos(cfg, *, video: str | None, videos: str | None, list_file: str | None) -> list[str]:
    """The files to classify: one file, every video under a folder (find_videos), or the paths of a
    data list (``path label`` lines, labels ignored)."""
    from video_gc.data.lists import find_videos, read_list_entries

    if videos:
        return find_videos(videos, frame_stores=cfg.DATA.FORMAT == "frames")
    if list_file:
        return [entry.path for entry in read_list_entries(
            list_file, separator=cfg.DATA.PATH_LABEL_SEPARATOR, prefix=cfg.DATA.PATH_PREFIX, integer_labels=False)]
    return [video]


def write_predictions_csv(output: str, header: list[str], fill: Callable[[Callable[[list], None]], list]) -> tuple:
    """``fill(write_row)`` streams rows into ``output`` under a temporary name, renamed when done, so a
    file at ``output`` is always a finished one; returns (rows written, what ``fill`` returns)."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.partial"
    rows = 0

    def write_row(row: list) -> None:
        nonlocal rows
        writer.writerow(row)
        rows += 1

    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            result = fill(write_row)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows, result


def predict_to_csv(cfg, paths: Sequence[str], output: str, *, checkpoint: str | None, opts: Sequence[str],
                   top_k: int, window: float | None = None, stride: float | None = None) -> tuple[int, list]:
    """Classify ``paths`` (whole videos, or sliding windows when ``window`` is set) into the CSV
    ``output``; returns (rows written, [(path, reason)] of the videos skipped)."""
    from video_gc.config import ConfigError

    classifier = load_classifier(cfg, checkpoint, opts)
    k = min(top_k, classifier.cfg.MODEL.NUM_CLASSES)
    if window is None:
        def fill(write_row):
            return classify_videos(classifier, paths, top_k=k, write_row=write_row)

        return write_predictions_csv(output, ["path", *top_k_header(k)], fill)
    if window < clip_seconds(classifier.cfg):
        raise ConfigError(f"--window {window:g} s is shorter than one clip ({clip_seconds(classifier.cfg):g} s = "
                          f"DATA.NUM_FRAMES x DATA.SAMPLING_RATE / DATA.TARGET_FPS): the clip would not fit in it")

    def fill_windows(write_row):
        return classify_windows(classifier, paths, window=window, stride=stride, top_k=k, write_row=write_row)

    return write_predictions_csv(output, ["path", "start_s", "end_s", *top_k_header(k)], fill_windows)


def main_predict(cfg_file: str, video: str | None = None, *, videos: str | None = None, list_file: str | None = None,
                 output: str | None = None, window: float | None = None, stride: float | None = None,
                 checkpoint: str = "", opts=(), top_k: int = 5) -> int:
    """tools/demo_net.py. One ``video`` without ``output`` or ``window``: print its prediction. Else
    write the CSV ``output``. Exit status: see the module docstring; user errors are one line on stderr."""
    from video_gc.config import ConfigError, load_config
    from video_gc.config.compat import report_unused
    from video_gc.data.lists import DataListError
    from video_gc.utils.io import CheckpointError

    try:
        cfg = load_config(cfg_file, list(opts))
        report_unused(cfg, get_logger())
        if top_k < 1:
            raise ConfigError(f"--top_k must be at least 1, got {top_k}")
        if video and output is None and window is None:
            print(format_prediction(predict_video(cfg, video, checkpoint=checkpoint or None, top_k=top_k, opts=opts)))
            return EXIT_OK
        if output is None:
            raise ConfigError("--output CSV is needed with --videos, --list or --window")
        if (window is None) != (stride is None):
            raise ConfigError("--window and --stride go together")
        if window is not None and (window <= 0 or stride <= 0):
            raise ConfigError(f"--window and --stride must be positive seconds, got {window:g} and {stride:g}")
        paths = input_videos(cfg, video=video, videos=videos, list_file=list_file)
        rows, failed = predict_to_csv(cfg, paths, output, checkpoint=checkpoint or None, opts=opts, top_k=top_k,
                                      window=window, stride=stride)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (EngineError, CheckpointError, DataListError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    done = len(paths) - len(failed)
    print(f"{output}: {rows} rows for {done} of {len(paths)} videos" + (f"; {len(failed)} skipped (listed on stderr)"
                                                                        if failed else ""))
    if done == 0:
        return EXIT_ERROR
    return EXIT_SKIPPED if failed else EXIT_OK
