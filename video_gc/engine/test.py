"""Multi-view testing: every video's V = NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS
views in one forward pass, softmax, ensembled by DATA.ENSEMBLE_METHOD.

Writes to OUTPUT_DIR ``test_metrics.json`` first, then ``failed_videos.txt``,
``predictions.npz`` (index, path, label, scores, prediction) and
``confusion_matrix.png`` and ``per_class.csv`` (per-class precision, recall, F1 and
top-5 recall; :mod:`video_gc.engine.report`): an output that cannot be written is an
error, but never costs the metrics. The ten most confused class pairs are logged and
stored in the metrics. Results from all ranks are gathered and de-duplicated
by video index, so every video counts exactly once.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from . import checkpoint as cu
from . import distributed as du
from .common import EngineError, class_names, load_test_weights, prepare_model, resolve_test_checkpoint
from .logger import get_logger, progress
from .meters import confusion_matrix, ensemble_views, mean_class_accuracy, topk_accuracies, topk_correct
from .plots import plot_confusion_matrix
from .report import format_confused_pairs, most_confused_pairs, per_class_csv, per_class_report
from video_gc.data.coverage import FAILED_VIDEOS_FILE, coverage_line, write_coverage_report
from video_gc.inference import prepare_for_inference
from video_gc.utils.io import atomic_write_text

logger = get_logger()

METRICS_FILE = "test_metrics.json"
PREDICTIONS_FILE = "predictions.npz"
CONFUSION_FILE = "confusion_matrix.png"
PER_CLASS_FILE = "per_class.csv"


@torch.inference_mode()
def score_videos(model, loader, *, method: str, show_progress: bool) -> dict:
    """This rank's per-video results: index, label, ensembled scores, correct views (top-1/top-5), views.

    ``model`` maps clips [N, 3, T, H, W] (any device) to float32 logits, e.g. an
    :func:`video_gc.inference.prepare_for_inference` model.
    """
    out = {"index": [], "label": [], "scores": [], "view_hits1": [], "view_hits5": [], "views": []}
    for batch in progress(loader, total=len(loader), desc="test", enabled=show_progress):
        labels = batch["labels"]
        if labels.numel() == 0:
            continue
        inputs = batch["inputs"]
        b, v = inputs.shape[:2]
        # All views of all videos in one forward pass: [B, V, 3, T, S, S] -> [B*V, 3, T, S, S].
        logits = model(inputs.flatten(0, 1))
        probs = torch.softmax(logits.float(), dim=-1).view(b, v, -1).cpu()
        hits1, hits5 = topk_correct(probs, labels[:, None].expand(b, v))
        out["index"].append(batch["indices"])
        out["label"].append(labels)
        out["scores"].append(ensemble_views(probs, method))
        out["view_hits1"].append(hits1.sum(1))
        out["view_hits5"].append(hits5.sum(1))
        out["views"].append(torch.full((b,), v))
    num_classes = None if not out["scores"] else out["scores"][0].shape[1]
    return {k: (torch.cat(vals).numpy() if vals else np.zeros((0,) if k != "scores" else (0, num_classes or 0)))
            for k, vals in out.items()}


def _merge(parts: list[dict], num_classes: int) -> dict:
    """Concatenate the ranks' results and keep one row per video index (sorted)."""
    from video_gc.data.samplers import dedup_by_index

    keys = ("label", "scores", "view_hits1", "view_hits5", "views")
    merged = {k: np.concatenate([p[k].reshape((len(p["index"]),) + ((num_classes,) if k == "scores" else ()))
                                 for p in parts]) for k in keys}
    index = np.concatenate([p["index"] for p in parts]).astype(np.int64)
    rows = dedup_by_index(torch.from_numpy(index), torch.arange(len(index)))
    keep = rows[1].numpy()
    return {"index": rows[0].numpy(), **{k: v[keep] for k, v in merged.items()}}


def compute_metrics(results: dict, num_classes: int) -> tuple[dict, np.ndarray]:
    """Video-level top-1/top-5, clip-level top-1/top-5 and mean per-class accuracy (percent)."""
    scores, labels = torch.from_numpy(results["scores"]), torch.from_numpy(results["label"])
    top1, top5 = topk_accuracies(scores, labels)
    preds = scores.argmax(1).numpy() if len(labels) else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(results["label"], preds, num_classes)
    views = results["views"].sum()
    metrics = {
        "top1": top1, "top5": top5,
        "clip_top1": 100.0 * results["view_hits1"].sum() / views if views else float("nan"),
        "clip_top5": 100.0 * results["view_hits5"].sum() / views if views else float("nan"),
        "mean_class_accuracy": mean_class_accuracy(matrix),
    }
    return metrics, matrix


def _results_table(metrics: dict) -> str:
    rows = [
        ("video top-1 (%)", f"{metrics['top1']:.2f}"),
        ("video top-5 (%)", f"{metrics['top5']:.2f}"),
        ("clip top-1 (%), single view", f"{metrics['clip_top1']:.2f}"),
        ("clip top-5 (%), single view", f"{metrics['clip_top5']:.2f}"),
        ("mean class accuracy (%)", f"{metrics['mean_class_accuracy']:.2f}"),
        ("views per video", f"{metrics['num_views']} ({metrics['ensemble_method']} of softmax)"),
        ("forward pass", f"TEST.INFERENCE_MODE {metrics['inference_mode']}"),
        ("videos evaluated / failed", f"{metrics['videos_evaluated']} / {metrics['videos_failed']}"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 24)
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])


def _weights_to_test(cfg, trained: str | None) -> str:
    """TEST.CHECKPOINT_FILE_PATH when set; else the checkpoint this run's training wrote (never a
    newer file that another run left in OUTPUT_DIR); else the newest valid one in OUTPUT_DIR."""
    if trained and not cfg.TEST.CHECKPOINT_FILE_PATH:
        return trained
    return resolve_test_checkpoint(cfg)


def coverage_shortfall(metrics: dict, min_coverage: float) -> str | None:
    """Why the evaluated videos are too few of the list for the metrics to stand for it; None if enough."""
    evaluated, total = metrics["videos_evaluated"], metrics["videos_total"]
    if total and evaluated / total >= min_coverage:
        return None
    share = 100.0 * evaluated / total if total else 0.0
    return (f"only {evaluated} of the {total} test videos were evaluated ({share:.1f}%, below TEST.MIN_COVERAGE "
            f"{min_coverage:g}); {metrics['videos_failed']} failed to decode (listed in {FAILED_VIDEOS_FILE}). "
            f"The metrics cover the evaluated videos only.")


def _write_output(what: str, path: str, write) -> bool:
    """``write()`` into a created folder; a failure is logged naming the file, and does not stop the
    other outputs (the metrics are written before any of them)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write()
    except OSError as err:
        logger.error("could not write the %s %s: %s", what, path, err)
        return False
    logger.info("%s: %s", what, path)
    return True


def _save_predictions(path: str, results: dict, paths: list[str]) -> None:
    np.savez_compressed(path, index=results["index"], path=np.array([paths[i] for i in results["index"]], dtype=str),
                        label=results["label"], scores=results["scores"].astype(np.float32),
                        prediction=results["scores"].argmax(1) if len(results["index"]) else results["label"])


def test(cfg, dist_info: du.DistInfo, model=None, trained: str | None = None) -> dict | None:
    """Run the multi-view test; returns the metrics dict on rank 0 (None elsewhere).

    ``trained``: the last checkpoint this run's training wrote; it is what gets tested unless
    TEST.CHECKPOINT_FILE_PATH names another file. Raises EngineError after writing the metrics
    when fewer than TEST.MIN_COVERAGE of the videos were evaluated or an output failed.
    """
    from video_gc.data import construct_loader

    start = time.time()
    device = dist_info.device
    path = du.run_on_master(lambda: _weights_to_test(cfg, trained), (EngineError,))
    if model is None:
        model = prepare_model(cfg, dist_info)
    model = cu.unwrap(model)
    load_test_weights(cfg, model, path)
    logger.info("testing weights from %s", path)

    loader = construct_loader(cfg, "test")
    num_videos = len(loader.dataset)
    num_views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    fast = prepare_for_inference(model, cfg.TEST.INFERENCE_MODE, device)
    local = score_videos(fast, loader, method=cfg.DATA.ENSEMBLE_METHOD, show_progress=dist_info.is_master)
    local["failed"] = list(getattr(loader, "failed_this_epoch", []))
    parts = du.all_gather_objects(local)
    if not dist_info.is_master:
        return None

    num_classes = cfg.MODEL.NUM_CLASSES
    results = _merge(parts, num_classes)
    failed = [entry for part in parts for entry in part["failed"]]
    failed_indices = {int(entry[0]) for entry in failed}
    metrics, matrix = compute_metrics(results, num_classes)
    names = class_names(cfg)
    metrics.update({
        "videos_total": num_videos,
        "videos_evaluated": int(len(results["index"])),
        "videos_failed": len(failed_indices),
        "coverage": coverage_line(num_videos, len(failed_indices)),
        "num_views": num_views,
        "ensemble_method": cfg.DATA.ENSEMBLE_METHOD,
        "inference_mode": fast.settings.mode,
        "checkpoint": os.path.abspath(path),
        "world_size": dist_info.world_size,
        "seconds": round(time.time() - start, 2),
        "per_class_accuracy": {names[c]: (100.0 * matrix[c, c] / matrix[c].sum() if matrix[c].sum() else None)
                               for c in range(num_classes)},
        "most_confused": most_confused_pairs(matrix, names),
    })
    if metrics["videos_evaluated"] + metrics["videos_failed"] != num_videos:
        logger.warning("test coverage mismatch: %d evaluated + %d failed != %d videos in the list",
                       metrics["videos_evaluated"], metrics["videos_failed"], num_videos)
    shortfall = coverage_shortfall(metrics, cfg.TEST.MIN_COVERAGE)
    metrics.update(coverage_ok=shortfall is None, coverage_problem=shortfall)

    # The metrics first: an optional output that fails below must not take them with it.
    metrics_path = os.path.join(cfg.OUTPUT_DIR, METRICS_FILE)
    try:
        atomic_write_text(metrics_path, json.dumps(
            {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}, indent=1))
    except OSError as err:
        raise EngineError(f"could not write the test metrics {metrics_path}: {err}") from err
    logger.info("test results (%s):\n%s", metrics["coverage"], _results_table(metrics))
    logger.info("most confused pairs (true -> predicted):\n%s", format_confused_pairs(metrics["most_confused"]))
    logger.info("metrics: %s", metrics_path)

    predictions_path = os.path.join(cfg.OUTPUT_DIR, cfg.TEST.SAVE_RESULTS_PATH or PREDICTIONS_FILE)
    if not predictions_path.endswith(".npz"):
        predictions_path += ".npz"  # numpy adds it; the log names the real file
    confusion_path = os.path.join(cfg.OUTPUT_DIR, CONFUSION_FILE)
    per_class_path = os.path.join(cfg.OUTPUT_DIR, PER_CLASS_FILE)
    per_class = per_class_report(results["scores"], results["label"], names)
    written = [
        _write_output("failed videos list", os.path.join(cfg.OUTPUT_DIR, FAILED_VIDEOS_FILE),
                      lambda: write_coverage_report(num_videos, failed, cfg.OUTPUT_DIR)),
        _write_output("predictions", predictions_path, lambda: _save_predictions(predictions_path, results,
                                                                                 loader.dataset.paths)),
        _write_output("confusion matrix", confusion_path, lambda: plot_confusion_matrix(matrix, names, confusion_path)),
        _write_output("per-class report", per_class_path,
                      lambda: atomic_write_text(per_class_path, per_class_csv(per_class))),
    ]
    problems = [shortfall] if shortfall else []
    if not all(written):
        problems.append(f"{written.count(False)} output(s) could not be written (errors above)")
    if problems:
        raise EngineError(f"the test metrics are in {metrics_path}, but: " + " ".join(problems))
    metrics["metrics_path"] = metrics_path
    return metrics
