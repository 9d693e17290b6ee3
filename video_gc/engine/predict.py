"""Classify one video file with a trained model (tools/demo_net.py).

The video goes through the test pipeline of the data package (all
``NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS`` views, decoded once), the views
run in one forward pass and their softmax scores are combined with
``DATA.ENSEMBLE_METHOD``.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from .common import (EngineError, class_names, load_test_weights, model_config_from_checkpoint, prepare_model,
                     resolve_test_checkpoint)
from .distributed import DistInfo
from video_gc.inference import prepare_for_inference
from .meters import ensemble_views


class VideoInputError(EngineError):
    """The video to classify is missing or cannot be decoded."""


def check_video(path: str) -> None:
    """Refuse anything but a decodable video, in one line, before the model loads.

    PyAV probes the file: it reports a bad one as an exception and prints nothing, where decord
    (the default backend) also writes FFmpeg's and its own C++ messages to stderr, out of Python's
    reach. Redirecting the process's stderr around decord instead would also swallow whatever any
    other thread writes meanwhile, and still leave the reason to dig out of the noise."""
    from video_gc.data import VideoDecodeError, open_video

    if os.path.isdir(path):
        raise VideoInputError(f"cannot classify {path}: it is a folder; give a video file")
    if not os.path.isfile(path):
        raise VideoInputError(f"video not found: {path}")
    try:
        decoder = open_video(path, "pyav")
        try:
            decoder.get_frames([0])
        finally:
            decoder.close()
    except VideoDecodeError as err:
        raise VideoInputError(f"cannot classify {path}: it is not a readable video ({err.reason})") from None


def _decode_views(cfg, video_path: str) -> torch.Tensor:
    """All test views of one file, [V, 3, T, S, S], through the data package's test dataset."""
    from video_gc.data import VideoDataset

    with tempfile.TemporaryDirectory(prefix="video_gc_predict_") as folder:
        # A one-line test list, so the exact test-time sampling and crops apply.
        with open(os.path.join(folder, "test.csv"), "w", encoding="utf-8") as f:
            f.write(f"{os.path.abspath(video_path)}{cfg.DATA.PATH_LABEL_SEPARATOR}0\n")
        one = cfg.clone()
        one.defrost()
        one.DATA.PATH_TO_DATA_DIR, one.DATA.PATH_PREFIX = folder, ""
        item = VideoDataset(one, "test")[0]
    if item["failed"] is not None:
        raise VideoInputError(f"cannot classify {video_path}: {item['failed'][2]}")
    return item["inputs"]


@torch.inference_mode()
def predict_video(cfg, video_path: str, checkpoint: str | None = None, top_k: int = 5, opts=()) -> dict:
    """Top-k (class name, score) for one video; scores are the ensembled softmax divided by the view count
    for ``sum`` (so they stay in [0, 1]). Also returns the weights used and the seconds taken.
    The model is the one the checkpoint stores the config of, but for the keys set in ``opts``."""
    start = time.time()
    check_video(video_path)
    if checkpoint:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.CHECKPOINT_FILE_PATH = checkpoint
    device = torch.device("cuda") if cfg.NUM_GPUS > 0 and torch.cuda.is_available() else torch.device("cpu")
    weights = resolve_test_checkpoint(cfg)
    cfg = model_config_from_checkpoint(cfg, weights, opts)
    model = prepare_model(cfg, DistInfo(device=device))
    load_test_weights(cfg, model, weights)
    fast = prepare_for_inference(model, cfg.TEST.INFERENCE_MODE, device)
    load_seconds = time.time() - start

    views = _decode_views(cfg, video_path)
    probs = torch.softmax(fast(views), dim=-1).unsqueeze(0).cpu()
    scores = ensemble_views(probs, cfg.DATA.ENSEMBLE_METHOD)[0]
    if cfg.DATA.ENSEMBLE_METHOD == "sum":
        scores = scores / probs.shape[1]
    names = class_names(cfg)
    top = scores.topk(min(top_k, scores.numel()))
    return {
        "video": video_path,
        "checkpoint": weights,
        "views": probs.shape[1],
        "top": [(names[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())],
        "seconds": time.time() - start,
        "load_seconds": load_seconds,
    }


def format_prediction(result: dict) -> str:
    width = max(len(name) for name, _ in result["top"])
    lines = [f"{result['video']} ({result['views']} views, weights {result['checkpoint']}):"]
    lines += [f"  {rank}. {name:<{width}}  {score:.4f}" for rank, (name, score) in enumerate(result["top"], start=1)]
    lines.append(f"time: {result['seconds']:.2f} s (model and weights {result['load_seconds']:.2f} s)")
    return "\n".join(lines)


def main_predict(cfg_file: str, video: str, *, checkpoint: str = "", opts=(), top_k: int = 5) -> int:
    """tools/demo_net.py: print the prediction; user errors become one line on stderr and status 1."""
    import sys

    from video_gc.config import ConfigError, load_config
    from video_gc.config.compat import report_unused
    from video_gc.utils.io import CheckpointError

    from .logger import get_logger

    try:
        cfg = load_config(cfg_file, list(opts))
        report_unused(cfg, get_logger())
        result = predict_video(cfg, video, checkpoint=checkpoint or None, top_k=top_k, opts=opts)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EngineError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_prediction(result))
    return 0
