"""What training, testing and single-video prediction share: the user-error type,
the model on the run's device, the weights a test reads and the class names."""

from __future__ import annotations

import os

from torch import nn

from video_gc.utils.io import CheckpointError

from . import checkpoint as cu
from . import distributed as du
from .logger import get_logger

logger = get_logger()


class EngineError(RuntimeError):
    """A run that cannot go on for a reason the user can fix; the message says which."""


def prepare_model(cfg, dist_info: du.DistInfo) -> nn.Module:
    """build_model on the run's device; SyncBN is checked against the device."""
    from video_gc.models import build_model

    model = build_model(cfg).to(dist_info.device)
    if cfg.BN.NORM_TYPE == "sync_batchnorm" and dist_info.distributed and dist_info.device.type != "cuda":
        raise EngineError("BN.NORM_TYPE sync_batchnorm needs CUDA devices; use batchnorm for CPU processes")
    return model


def resolve_test_checkpoint(cfg) -> str:
    """TEST.CHECKPOINT_FILE_PATH, else the newest valid checkpoint in OUTPUT_DIR; never nothing."""
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if path:
        if not os.path.isfile(path):
            raise EngineError(f"TEST.CHECKPOINT_FILE_PATH: file not found: {path}")
        return path
    found = cu.find_last_valid_checkpoint(cfg.OUTPUT_DIR)
    if found is None:
        raise EngineError(
            f"no weights to test: TEST.CHECKPOINT_FILE_PATH is empty and {cu.checkpoint_dir(cfg.OUTPUT_DIR)} holds "
            f"no usable checkpoint. Train first (TRAIN.ENABLE True) or set TEST.CHECKPOINT_FILE_PATH; "
            f"video_gc never tests randomly initialised weights.")
    return found[0]


def load_test_weights(cfg, model, path: str) -> None:
    """A video_gc checkpoint loads strictly; other layouts (TEST.CHECKPOINT_TYPE) go through the
    weights importer, also strictly: testing half-loaded weights would be testing random ones."""
    if cfg.TEST.CHECKPOINT_TYPE == "pytorch":
        try:
            cu.load_model_state(model, cu.read_checkpoint(path), path)
            return
        except CheckpointError:
            pass  # e.g. a PySlowFast .pyth: same container, other names; the importer maps them
    from video_gc.models.weights import import_weights

    report = import_weights(cu.unwrap(model), path, fmt=cfg.TEST.CHECKPOINT_TYPE, inflate=False, strict=True,
                            require_head=True, require_context=True)
    logger.info("%s", report.format())


def class_names(cfg) -> list[str]:
    """Names from DATA.CLASS_NAMES_FILE (classids.json), else the class indices as text."""
    from video_gc.data.lists import DataListError, read_classids

    path = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.CLASS_NAMES_FILE)
    try:
        names = read_classids(path)
    except DataListError as err:
        logger.warning("class names unavailable (%s); using class indices", err)
        names = []
    if len(names) != cfg.MODEL.NUM_CLASSES:
        if names:
            logger.warning("%s lists %d classes but MODEL.NUM_CLASSES is %d; using class indices",
                           path, len(names), cfg.MODEL.NUM_CLASSES)
        names = [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]
    return names
