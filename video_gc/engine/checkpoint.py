"""Training checkpoints: save, load, find the newest valid one, RNG state.

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` can read:

- ``epoch``: 0-based index of the last finished epoch (PySlowFast convention;
  the file name counts from 1: ``checkpoint_epoch_00005.pyth`` holds epoch 4);
- ``model_state`` (never DDP-prefixed), ``optimizer_state``, ``scaler_state``;
- ``cfg``: the run's config as a YAML string;
- ``rng``: torch (CPU and every CUDA device), numpy and python RNG states as
  tensors, lists and ints.

Files are written with :func:`video_gc.utils.io.atomic_save` and read with
:func:`video_gc.utils.io.safe_torch_load`.
"""

from __future__ import annotations

import logging
import os
import random
import re

import numpy as np
import torch
from torch import nn

from video_gc.models.weights import require_finite
from video_gc.utils.io import CheckpointError, atomic_save, safe_torch_load

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_epoch_(\d{5})\.pyth$")
REQUIRED_KEYS = ("epoch", "model_state")


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, epoch: int) -> str:
    """Path of the checkpoint written after 0-based ``epoch``."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch + 1:05d}.pyth")


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoint files in OUTPUT_DIR/checkpoints, newest (highest epoch) first."""
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := _NAME.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found, reverse=True)]


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
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    saved_cuda = state.get("cuda") or []
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved_cuda and len(saved_cuda) == visible:
        torch.cuda.set_rng_state_all(saved_cuda)
    elif saved_cuda:
        logger.warning("checkpoint holds CUDA RNG states for %d devices but %d are visible; CUDA random "
                       "streams start afresh, so the resumed run is not bit-identical to an uninterrupted one",
                       len(saved_cuda), visible)
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss_next"]))


# ---------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------
def save_checkpoint(output_dir: str, epoch: int, model: nn.Module, optimizer=None, scaler=None, cfg=None) -> str:
    """Write the checkpoint of 0-based ``epoch`` atomically; returns its path."""
    path = checkpoint_path(output_dir, epoch)
    state = {
        "epoch": int(epoch),
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "cfg": cfg.dump() if cfg is not None else "",
        "rng": get_rng_state(),
    }
    atomic_save(state, path)
    return path


def read_checkpoint(path: str) -> dict:
    """Load and sanity-check a training checkpoint; CheckpointError names the file."""
    state = safe_torch_load(path, map_location="cpu")
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a video_gc training checkpoint (needs {REQUIRED_KEYS}, has {keys})")
    return state


def find_last_valid_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads; unreadable newer files are skipped with a warning."""
    for path in list_checkpoints(output_dir):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            logger.warning("skipping unusable checkpoint: %s", err)
    return None


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


def restore_training_state(state: dict, path: str, model: nn.Module, optimizer=None, scaler=None) -> int:
    """Load model, optimizer, grad scaler and RNG states; returns the epoch to start from."""
    load_model_state(model, state, path)
    if optimizer is not None and state.get("optimizer_state") is not None:
        optimizer.load_state_dict(state["optimizer_state"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler_state") is not None:
        scaler.load_state_dict(state["scaler_state"])
    if state.get("rng") is not None:
        set_rng_state(state["rng"])
    return int(state["epoch"]) + 1
