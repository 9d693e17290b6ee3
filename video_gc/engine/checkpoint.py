"""Training checkpoints: save, load, find the newest valid one, RNG state.

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` can read:

- ``epoch``: 0-based index of the last finished epoch (PySlowFast convention;
  the file name counts from 1: ``checkpoint_epoch_00005.pyth`` holds epoch 4);
- ``model_state`` (never DDP-prefixed), ``optimizer_state``, ``scaler_state``;
- ``cfg``: the run's config as a YAML string;
- ``rng``: torch (CPU and every CUDA device), numpy and python RNG states as
  tensors, lists and ints;
- ``progress``: where training stands (:class:`Progress`): the iteration reached
  in the epoch, the epoch's running meters, the bad videos skipped in it so
  far, and the best validation top-1 yet.

Three kinds of file in OUTPUT_DIR/checkpoints:

- ``checkpoint_epoch_NNNNN.pyth`` after every CHECKPOINT_PERIOD-th epoch (the
  newest CHECKPOINT_KEEP_LAST are kept, all when it is 0);
- ``checkpoint_latest.pyth``, written part-way through an epoch (every
  CHECKPOINT_PERIOD_MINUTES / CHECKPOINT_PERIOD_ITERS, and when a stop signal
  arrives); ``epoch`` is then the epoch in progress and ``progress.iteration``
  > 0. Removed once an epoch checkpoint supersedes it;
- ``checkpoint_best.pyth``: a hard link to (or copy of) the epoch checkpoint
  with the best validation top-1.

Files are written with :func:`video_gc.utils.io.atomic_save` and read with
:func:`video_gc.utils.io.safe_torch_load`. Per-item augmentation is seeded by
(seed, epoch, index), so DataLoader workers hold no state worth saving: the
sampler's position and the main process's RNG make a resumed run see exactly
the batches and random draws an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from video_gc.models.weights import require_finite
from video_gc.utils.io import CheckpointError, atomic_save, safe_torch_load

from .optimizer import check_optimizer_state

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_epoch_(\d{5})\.pyth$")
LATEST = "checkpoint_latest.pyth"
BEST = "checkpoint_best.pyth"
REQUIRED_KEYS = ("epoch", "model_state")


@dataclass
class Progress:
    """Where training stands: ``epoch`` (0-based) is the one to run, ``iteration`` of its
    iterations are done; ``meter`` and ``skipped`` belong to those iterations."""

    epoch: int = 0
    iteration: int = 0
    meter: dict | None = None
    skipped: list[str] = field(default_factory=list)
    best_top1: float | None = None
    best_epoch: int | None = None
    global_batch: int | None = None  # TRAIN.BATCH_SIZE: what ``iteration`` counts in

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.iteration


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, epoch: int) -> str:
    """Path of the checkpoint written after 0-based ``epoch``."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch + 1:05d}.pyth")


def list_checkpoints(output_dir: str) -> list[str]:
    """Epoch checkpoint files in OUTPUT_DIR/checkpoints, newest (highest epoch) first."""
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := _NAME.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found, reverse=True)]


def run_checkpoints(output_dir: str) -> list[str]:
    """Every checkpoint file of a run, newest first: latest (removed once an epoch checkpoint
    supersedes it), the epoch ones, then best."""
    latest, best = (os.path.join(checkpoint_dir(output_dir), name) for name in (LATEST, BEST))
    return [path for path in (latest, *list_checkpoints(output_dir), best) if os.path.isfile(path)]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------
# RNG state in weights_only-compatible form
# ---------------------------------------------------------------------------
def get_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # This process's device only: every rank seeds it alike and draws alike (one step, one batch
        # size), so rank 0's state is every rank's; the other devices are other processes'.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    saved_cuda = state.get("cuda") or []
    if saved_cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved_cuda[0])  # onto this process's device
    elif saved_cuda:
        logger.warning("checkpoint holds a CUDA RNG state but no CUDA device is visible; CUDA random "
                       "streams start afresh, so the resumed run is not bit-identical to an uninterrupted one")
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss_next"]))


# ---------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------
def save_checkpoint(output_dir: str, epoch: int, model: nn.Module, optimizer=None, scaler=None, cfg=None, *,
                    progress: Progress | None = None) -> str:
    """Write a checkpoint atomically; returns its path. Without ``progress.iteration`` it is the
    checkpoint of finished 0-based ``epoch``; with it, ``checkpoint_latest.pyth`` part-way
    through ``epoch``."""
    progress = progress or Progress(epoch=epoch + 1)
    mid_epoch = progress.iteration > 0
    path = os.path.join(checkpoint_dir(output_dir), LATEST) if mid_epoch else checkpoint_path(output_dir, epoch)
    state = {
        "epoch": int(epoch),
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "cfg": cfg.dump() if cfg is not None else "",
        "rng": get_rng_state(),
        "progress": asdict(progress),
    }
    atomic_save(state, path)
    return path


def progress_of(state: dict) -> Progress:
    """Where training continues from a checkpoint (one written before ``progress`` existed
    holds a finished epoch)."""
    saved = state.get("progress")
    if saved:
        return Progress(**saved)
    return Progress(epoch=int(state["epoch"]) + 1)


def read_checkpoint(path: str) -> dict:
    """Load and sanity-check a training checkpoint; CheckpointError names the file."""
    state = safe_torch_load(path, map_location="cpu")
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a video_gc training checkpoint (needs {REQUIRED_KEYS}, has {keys})")
    return state


def _readable(path: str) -> dict | None:
    try:
        return read_checkpoint(path)
    except CheckpointError as err:
        logger.warning("skipping unusable checkpoint: %s", err)
        return None


def find_last_valid_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """The checkpoint that resumes furthest along, among the epoch ones and latest, that
    loads; unreadable files are skipped with a warning."""
    latest = os.path.join(checkpoint_dir(output_dir), LATEST)
    best = None
    if os.path.isfile(latest) and (state := _readable(latest)) is not None:
        best = (latest, state)
    reached = progress_of(best[1]).position if best else (-1, 0)
    for path in list_checkpoints(output_dir):
        if (int(_NAME.match(os.path.basename(path)).group(1)), 0) <= reached:
            break  # this one and every older one resume no further than latest
        if (state := _readable(path)) is not None:
            return path, state
    return best


def prune_checkpoints(output_dir: str, *, keep_last: int, superseded_latest: bool) -> list[str]:
    """After an epoch checkpoint: delete all but the newest ``keep_last`` epoch checkpoints (none
    when 0) and a latest one it supersedes; returns the names deleted. The newest is always kept."""
    doomed = list_checkpoints(output_dir)[max(keep_last, 1):] if keep_last > 0 else []
    latest = os.path.join(checkpoint_dir(output_dir), LATEST)
    if superseded_latest and os.path.isfile(latest):
        doomed.append(latest)
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return [os.path.basename(path) for path in doomed]


def mark_best(path: str) -> str:
    """Make ``checkpoint_best.pyth`` the checkpoint ``path`` (a hard link; a copy where the file
    system has none), replaced atomically; returns its path."""
    target = os.path.join(os.path.dirname(path), BEST)
    # Named like atomic_save's temporary files, so a run killed right here leaves nothing at the next start.
    temp = os.path.join(os.path.dirname(path), f".tmp_{os.getpid() % 10**8:08d}.{BEST}")
    with contextlib.suppress(FileNotFoundError):
        os.remove(temp)
    try:
        os.link(path, temp)
    except OSError:
        shutil.copyfile(path, temp)
    os.replace(temp, target)
    return target


def _list_keys(keys: list[str], limit: int = 8) -> str:
    return f"{keys[:limit]}{'...' if len(keys) > limit else ''}"


def load_model_state(model: nn.Module, state: dict, path: str) -> None:
    """Strict load of ``state['model_state']``: names and shapes are checked before any
    tensor is copied, so a mismatch leaves the model untouched and the error names the file."""
    target = unwrap(model)
    weights = state["model_state"]
    # Checkpoints written by other tools may carry DDP's "module." prefix.
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    expected = target.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from the config: missing keys {_list_keys(missing)}, "
            f"unexpected keys {_list_keys(unexpected)}")
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in weights.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        raise CheckpointError(
            f"{path} does not match the model built from the config: shape mismatch in {_list_keys(mismatched, 4)} "
            f"(e.g. a different MODEL.NUM_CLASSES, RESNET.WIDTH_PER_GROUP or CONTEXT setting)")
    require_finite(weights, path)
    target.load_state_dict(weights, strict=True)


def restore_training_state(state: dict, path: str, model: nn.Module, optimizer=None, scaler=None) -> Progress:
    """Load model, optimizer, grad scaler and RNG states; returns where training continues."""
    if optimizer is not None and state.get("optimizer_state") is not None:
        check_optimizer_state(optimizer, state["optimizer_state"], path)  # before anything is loaded
    load_model_state(model, state, path)
    if optimizer is not None and state.get("optimizer_state") is not None:
        optimizer.load_state_dict(state["optimizer_state"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler_state") is not None:
        scaler.load_state_dict(state["scaler_state"])
    if state.get("rng") is not None:
        set_rng_state(state["rng"])
    return progress_of(state)
