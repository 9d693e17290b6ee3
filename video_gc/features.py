"""Pre-logit features of every video of a list or folder (``tools/extract_features.py``).

Each video goes through the test pipeline (``VideoDataset(cfg, "test")``: all
``NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS`` views, decoded once) and the model's
``forward_features`` (the pooled res5 output, before dropout and fc) in
``TEST.INFERENCE_MODE``. Every view's feature is kept, and their mean per video.

Output folder (a list of 240k videos makes ~1,000 chunk files, not 240k files or one giant pickle):

    features.json                 the settings the features depend on; a rerun must match them
    chunks/chunk_NNNNNNNNN.views.npy    float32 [n, V, D]: n videos' per-view features
    chunks/chunk_NNNNNNNNN.pooled.npy   float32 [n, D]: their mean over the V views
    chunks/chunk_NNNNNNNNN.csv          index,path,label,row of the n videos: written last, it commits the chunk
    index.csv                     index,path,label,views_file,pooled_file,row of every extracted video
    failed.csv                    index,path,reason of the videos that could not be read in the last run
    log.txt

A chunk is named after the list index of its first video and holds up to ``chunk_size`` videos of
one process. Every file is written under a temporary name and renamed, and a chunk counts as done
only once its ``.csv`` exists, so a run killed at any point resumes by skipping the videos of the
committed chunks (losing at most one unfinished chunk per process). Under torchrun, process ``r``
of ``W`` takes the videos with ``index % W == r``: every video is written by exactly one process.
``load_features`` reads the result back.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from video_gc.config import ConfigError, get_key
from video_gc.engine import distributed as du
from video_gc.engine.logger import get_logger, progress
from video_gc.engine.predict import ReadableVideos, dataset_over, load_trained_model, run_device, views_loader
from video_gc.inference import prepare_for_inference
from video_gc.utils.io import acquire_lock, atomic_write_text, release_lock

logger = get_logger()

MANIFEST_FILE, INDEX_FILE, FAILED_FILE, LOCK_FILE = "features.json", "index.csv", "failed.csv", "extract.lock"
CHUNK_DIR = "chunks"
INDEX_COLUMNS = ("index", "path", "label", "views_file", "pooled_file", "row")
CHUNK_COLUMNS = ("index", "path", "label", "row")
DEFAULT_CHUNK_SIZE = 256
NO_LABEL = -1  # videos found in a folder have no label
# What the features depend on besides the weights and the videos: a rerun into the same folder must match.
SETTINGS_KEYS = ("DATA.NUM_FRAMES", "DATA.SAMPLING_RATE", "DATA.TARGET_FPS", "DATA.TEST_CROP_SIZE",
                 "DATA.DECODING_SHORT_SIZE", "DATA.FORMAT", "DATA.DECODING_BACKEND", "DATA.USE_OFFSET_SAMPLING",
                 "DATA.MEAN", "DATA.STD", "TEST.NUM_ENSEMBLE_VIEWS", "TEST.NUM_SPATIAL_CROPS", "TEST.INFERENCE_MODE")
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_INCOMPLETE = 0, 1, 2, 3


class FeaturesError(RuntimeError):
    """A features folder that cannot be written or read; the message names the file and the problem."""


class FeatureNet(nn.Module):
    """A model whose output is its pre-logit features (``forward_features``), so the inference
    rewrite of TEST.INFERENCE_MODE applies to it as it does to the classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


@dataclass
class Features:
    """Features read back by :func:`load_features`, one row per extracted video in list order."""

    index: np.ndarray  # int64 [N]: the video's line in the list (or place in the folder's sorted files)
    paths: list
    labels: np.ndarray  # int64 [N]; -1 for videos found in a folder
    pooled: np.ndarray  # float32 [N, D]: mean of the views' features
    views: np.ndarray | None  # float32 [N, V, D] when asked for


# ---------------------------------------------------------------------------
# Input videos and the settings file
# ---------------------------------------------------------------------------
def video_entries(cfg, *, list_file: str | None = None, videos: str | None = None) -> tuple[list[str], list[int]]:
    """(absolute paths, labels) of a ``path label`` list (relative paths resolve as for the datasets:
    against DATA.PATH_PREFIX, else the list's folder) or of every video under a folder (label -1)."""
    from video_gc.data.lists import find_videos, read_list_entries

    if bool(list_file) == bool(videos):
        raise ConfigError("give the videos as a list (--list) or a folder (--videos), one of the two")
    if videos:
        found = find_videos(videos, frame_stores=cfg.DATA.FORMAT == "frames")
        return [os.path.abspath(p) for p in found], [NO_LABEL] * len(found)
    entries = read_list_entries(list_file, separator=cfg.DATA.PATH_LABEL_SEPARATOR, prefix=cfg.DATA.PATH_PREFIX)
    return [os.path.abspath(e.path) for e in entries], [e.label for e in entries]


def run_settings(cfg, checkpoint: str, paths: Sequence[str], labels: Sequence[int]) -> dict:
    """What the features in a folder depend on: the weights file, the video list and SETTINGS_KEYS."""
    stat = os.stat(checkpoint)
    digest = hashlib.sha256("".join(f"{p}\t{label}\n" for p, label in zip(paths, labels)).encode()).hexdigest()
    settings = {
        "checkpoint": {"path": os.path.abspath(checkpoint), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "videos": len(paths),
        "videos_sha256": digest,
        **{key: get_key(cfg, key) for key in SETTINGS_KEYS},
    }
    return json.loads(json.dumps(settings))  # tuples as lists: as the file reads back


def _check_settings(output_dir: str, settings: dict) -> None:
    """Write the settings file, or check a rerun against the one there."""
    path = os.path.join(output_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        atomic_write_text(path, json.dumps(settings, indent=1) + "\n")
        return
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except json.JSONDecodeError as err:
        raise FeaturesError(f"{path}: not valid JSON ({err.msg}); delete the folder or choose another "
                            f"--output") from None
    differ = [f"{key} (folder {stored.get(key)!r}, now {value!r})" for key, value in settings.items()
              if stored.get(key) != value]
    if differ:
        raise FeaturesError(f"{output_dir} holds features of another run: {'; '.join(differ)}. Choose another "
                            f"--output, or delete the folder to start again")


def _open_output(output_dir: str, settings: dict) -> str | None:
    """Rank 0, before any process writes: take the folder's lock, check the settings, remove the
    temporary files of a killed run. Returns what the lock took over (a dead run), if anything."""
    os.makedirs(os.path.join(output_dir, CHUNK_DIR), exist_ok=True)
    taken_over = acquire_lock(os.path.join(output_dir, LOCK_FILE))
    try:
        _check_settings(output_dir, settings)
    except FeaturesError:
        release_lock(os.path.join(output_dir, LOCK_FILE))
        raise
    for stale in glob.glob(os.path.join(output_dir, CHUNK_DIR, "*.partial")):
        os.remove(stale)
    return taken_over


# ---------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------
def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _chunk_files(name: str) -> tuple[str, str, str]:
    """(views, pooled, csv) paths of chunk ``name``, relative to the output folder."""
    base = os.path.join(CHUNK_DIR, name)
    return f"{base}.views.npy", f"{base}.pooled.npy", f"{base}.csv"


def write_chunk(output_dir: str, indices: Sequence[int], paths: Sequence[str], labels: Sequence[int],
                views: np.ndarray) -> str:
    """Write the per-view features ``views`` [n, V, D] of the videos ``indices`` of the list, their
    means, then the chunk's ``.csv``, which commits it. Returns the chunk's name."""
    name = f"chunk_{indices[0]:09d}"
    views_file, pooled_file, csv_file = _chunk_files(name)
    views = np.ascontiguousarray(views, dtype=np.float32)
    _save_npy(os.path.join(output_dir, views_file), views)
    # The mean in float64, stored as float32: the same number whatever order the views are summed in.
    _save_npy(os.path.join(output_dir, pooled_file), views.mean(axis=1, dtype=np.float64).astype(np.float32))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CHUNK_COLUMNS)
    writer.writerows((i, paths[i], labels[i], row) for row, i in enumerate(indices))
    atomic_write_text(os.path.join(output_dir, csv_file), text.getvalue())
    return name


def committed_rows(output_dir: str) -> list[dict]:
    """Every row of every committed chunk: index, path, label, row (ints where they are) and chunk."""
    rows = []
    for path in sorted(glob.glob(os.path.join(output_dir, CHUNK_DIR, "chunk_*.csv"))):
        chunk = os.path.basename(path)[:-len(".csv")]
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"index": int(row["index"]), "path": row["path"], "label": int(row["label"]),
                             "row": int(row["row"]), "chunk": chunk})
    return rows


class _ChunkBuffer:
    """Collects one process's per-video features and writes them ``size`` videos at a time."""

    def __init__(self, output_dir: str, size: int, paths: Sequence[str], labels: Sequence[int]) -> None:
        self.output_dir, self.size, self.paths, self.labels = output_dir, size, paths, labels
        self.indices: list[int] = []
        self.views: list[np.ndarray] = []
        self.written = 0

    def add(self, indices: Sequence[int], views: np.ndarray) -> None:
        for index, one in zip(indices, views):
            self.indices.append(index)
            self.views.append(one)
            if len(self.indices) == self.size:
                self.flush()

    def flush(self) -> None:
        if self.indices:
            write_chunk(self.output_dir, self.indices, self.paths, self.labels, np.stack(self.views))
            self.written += len(self.indices)
            self.indices, self.views = [], []


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------
@torch.inference_mode()
def _extract_pending(net, cfg, dist_info: du.DistInfo, pending: Sequence[int], buffer: _ChunkBuffer,
                     paths: Sequence[str]) -> list[tuple[int, str, str]]:
    """Features of the videos ``pending`` into ``buffer``; returns (index, path, reason) of the unreadable ones."""
    from video_gc.data.loader import per_process_batch_size

    batch_size = per_process_batch_size(cfg.TEST.BATCH_SIZE, dist_info.world_size, "TEST.BATCH_SIZE")
    loader = views_loader(cfg, ReadableVideos(dataset_over(cfg, paths)), pending, batch_size)
    failed = []
    for batch in progress(loader, total=len(loader), desc="features", enabled=dist_info.is_master):
        for index, _, reason in batch["failed"]:
            logger.warning("cannot read %s: %s", paths[index], reason)
            failed.append((index, paths[index], reason))
        if batch["indices"].numel():
            b, v = batch["inputs"].shape[:2]
            features = net(batch["inputs"].flatten(0, 1)).view(b, v, -1).cpu().numpy()
            buffer.add(batch["indices"].tolist(), features)
    buffer.flush()
    return failed


def _finish_output(output_dir: str, paths: Sequence[str], failed: list[tuple[int, str, str]]) -> dict:
    """Rank 0, once every process is done: index.csv, failed.csv, unfinished chunk files removed."""
    rows = committed_rows(output_dir)
    seen: dict = {}
    for row in rows:
        if row["index"] in seen:
            raise FeaturesError(f"video {row['index']} ({row['path']}) is in both {seen[row['index']]} and "
                                f"{row['chunk']} of {output_dir}: two runs wrote into the folder at once")
        seen[row["index"]] = row["chunk"]
    names = set(seen.values())
    for path in glob.glob(os.path.join(output_dir, CHUNK_DIR, "chunk_*.npy")):
        if os.path.basename(path).split(".")[0] not in names:  # data of a chunk a killed run never committed
            os.remove(path)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row in sorted(rows, key=lambda r: r["index"]):
        views_file, pooled_file, _ = _chunk_files(row["chunk"])
        writer.writerow((row["index"], row["path"], row["label"], views_file, pooled_file, row["row"]))
    atomic_write_text(os.path.join(output_dir, INDEX_FILE), text.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("index", "path", "reason"))
    writer.writerows(sorted(failed))
    atomic_write_text(os.path.join(output_dir, FAILED_FILE), text.getvalue())
    missing = sorted(set(range(len(paths))) - set(seen) - {index for index, _, _ in failed})
    if missing:
        raise FeaturesError(f"{len(missing)} videos are neither extracted nor failed (the first: {paths[missing[0]]})")
    return {"videos": len(paths), "extracted": len(seen), "failed": len(failed)}


def extract_features(cfg, *, checkpoint: str, paths: Sequence[str], labels: Sequence[int], output_dir: str,
                     dist_info: du.DistInfo, opts: Sequence[str] = (), chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
    """Write the features of the videos ``paths`` not yet in ``output_dir``; this process takes those with
    ``index % world_size == rank``. Returns, on every rank, the counts of the folder once all are done:
    videos, extracted (in index.csv), failed (in failed.csv), new (written by this run)."""
    if chunk_size < 1:
        raise FeaturesError(f"the chunk size must be at least 1, got {chunk_size}")
    cfg, model = load_trained_model(cfg, checkpoint, opts, dist_info)
    net = prepare_for_inference(FeatureNet(model), cfg.TEST.INFERENCE_MODE, dist_info.device)
    output_dir = os.path.abspath(output_dir)
    settings = run_settings(cfg, checkpoint, paths, labels)
    taken_over = du.run_on_master(lambda: _open_output(output_dir, settings), (FeaturesError, OSError, RuntimeError))
    if taken_over:
        logger.warning("took over the lock of a run that stopped (%s); resuming its work", taken_over)
    try:
        done = {row["index"] for row in committed_rows(output_dir)}
        rank, world = dist_info.rank, dist_info.world_size
        pending = [i for i in range(len(paths)) if i % world == rank and i not in done]
        logger.info("%d videos: %d already extracted, %d to extract by %d process(es), %d views each, weights %s",
                    len(paths), len(done), len(paths) - len(done), world,
                    cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS, checkpoint)
        buffer = _ChunkBuffer(output_dir, chunk_size, paths, labels)
        try:
            outcome = (_extract_pending(net, cfg, dist_info, pending, buffer, paths), buffer.written, None)
        except Exception as err:  # still reach the gather below, so the other processes do not wait for this one
            outcome = (None, buffer.written, f"process {rank}: {type(err).__name__}: {err}")
            if not dist_info.distributed:
                raise
        gathered = du.all_gather_objects(outcome)  # also waits for every process to finish
        errors = [error for _, _, error in gathered if error]
        if errors:
            raise FeaturesError("extraction stopped (finished chunks are kept; rerun to resume): " + "; ".join(errors))
        parts = [(failed, written) for failed, written, _ in gathered]
        summary = du.run_on_master(lambda: _finish_output(output_dir, paths, [f for part, _ in parts for f in part]),
                                   (FeaturesError, OSError))
    finally:
        if dist_info.is_master:
            release_lock(os.path.join(output_dir, LOCK_FILE))
    return {**summary, "new": sum(written for _, written in parts)}


def exit_status(summary: dict) -> int:
    """0 every video extracted; 3 some could not be read (the others are in the index); 1 none."""
    if summary["extracted"] == summary["videos"]:
        return EXIT_OK
    return EXIT_INCOMPLETE if summary["extracted"] else EXIT_ERROR


# ---------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------
def _gather(output_dir: str, files: Sequence[str], rows: np.ndarray, mmap: bool) -> np.ndarray:
    """Row ``rows[i]`` of ``files[i]`` for every i, stacked; each file opened once."""
    groups: dict = {}
    for i, name in enumerate(files):
        groups.setdefault(name, []).append(i)
    out = None
    for name, positions in groups.items():
        try:
            array = np.load(os.path.join(output_dir, name), mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise FeaturesError(f"cannot read {os.path.join(output_dir, name)} ({err})") from err
        if out is None:
            out = np.empty((len(files),) + array.shape[1:], dtype=np.float32)
        positions = np.array(positions)
        out[positions] = array[rows[positions]]
    return out


def load_features(output_dir: str, *, views: bool = False) -> Features:
    """The features in ``output_dir`` (as index.csv lists them, in list order): pooled always, the
    per-view ones too with ``views=True`` (N x V x D floats: 59 GB for 240k videos x 30 views x 2048)."""
    path = os.path.join(output_dir, INDEX_FILE)
    if not os.path.isfile(path):
        raise FeaturesError(f"{path} not found: no finished extraction in {output_dir} (a killed run writes it "
                            f"when rerun with the same command)")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return Features(np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros((0, 0), np.float32),
                        np.zeros((0, 0, 0), np.float32) if views else None)
    row_of = np.array([int(r["row"]) for r in rows])
    return Features(
        index=np.array([int(r["index"]) for r in rows], dtype=np.int64),
        paths=[r["path"] for r in rows],
        labels=np.array([int(r["label"]) for r in rows], dtype=np.int64),
        pooled=_gather(output_dir, [r["pooled_file"] for r in rows], row_of, mmap=False),
        views=_gather(output_dir, [r["views_file"] for r in rows], row_of, mmap=True) if views else None,
    )


# ---------------------------------------------------------------------------
# tools/extract_features.py
# ---------------------------------------------------------------------------
def _join_processes(cfg) -> du.DistInfo:
    """This process's place: under torchrun the process group (gloo on the CPU), else a single process."""
    if du.launched_by_torchrun():
        return du.init_process_group(cfg, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                                     local_rank=int(os.environ["LOCAL_RANK"]), init_method="env://")
    return du.DistInfo(device=run_device(cfg))


def main_extract(*, checkpoint: str, output: str, cfg_file: str | None = None, list_file: str | None = None,
                 videos: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE, opts: Sequence[str] = ()) -> int:
    """tools/extract_features.py. Exit status: 0 every video extracted; 3 finished, but some videos could
    not be read (failed.csv; a rerun retries them); 1 an error stopped the run, or no video was extracted;
    2 a config error. Errors are one line on stderr."""
    import sys

    from video_gc.config import load_config
    from video_gc.config.compat import report_unused
    from video_gc.data.lists import DataListError
    from video_gc.engine.common import EngineError
    from video_gc.engine.logger import setup_logging
    from video_gc.utils.io import CheckpointError, LockedError

    try:
        cfg = load_config(cfg_file, list(opts))
        dist_info = _join_processes(cfg)
        setup_logging(output, dist_info.is_master)
        if dist_info.is_master:
            report_unused(cfg, logger)
        paths, labels = video_entries(cfg, list_file=list_file, videos=videos)
        summary = extract_features(cfg, checkpoint=checkpoint, paths=paths, labels=labels, output_dir=output,
                                   dist_info=dist_info, opts=opts, chunk_size=chunk_size)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (EngineError, CheckpointError, DataListError, FeaturesError, LockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        du.destroy_process_group()
    if dist_info.is_master:
        index = os.path.join(output, INDEX_FILE)
        logger.info("features of %d of %d videos in %s (%d extracted by this run); %d could not be read%s",
                    summary["extracted"], summary["videos"], index, summary["new"], summary["failed"],
                    f": listed in {os.path.join(output, FAILED_FILE)}" if summary["failed"] else "")
    return exit_status(summary)
