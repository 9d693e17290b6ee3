"""What training, testing and single-video prediction share: the user-error type,
the model on the run's device, the weights a test reads, the model config a checkpoint
stores and the class names."""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

import yaml
from torch import nn

from video_gc.config import CfgNode, ConfigError, get_key, merge_config_dict, upgrade_config, validate_cfg
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


def _has_video_gc_names(weights, path: str) -> bool:
    """The weights carry video_gc's names (a PySlowFast .pyth is the same container with other names)."""
    from video_gc.models.weights import detect_format

    try:
        return detect_format(weights, path) == "video_gc"
    except CheckpointError:
        return False  # no known layout: loading the weights says so


def video_gc_training_state(path: str) -> dict | None:
    """The training checkpoint at ``path`` when its weights carry video_gc's names, else None."""
    try:
        state = cu.read_checkpoint(path)
    except CheckpointError:
        return None  # not a training checkpoint: the importer reads it, or says why it cannot
    return state if _has_video_gc_names(state["model_state"], path) else None


def load_test_weights(cfg, model, path: str) -> None:
    """A video_gc checkpoint loads strictly; other layouts (TEST.CHECKPOINT_TYPE) go through the
    weights importer, also strictly: testing half-loaded weights would be testing random ones."""
    if cfg.TEST.CHECKPOINT_TYPE == "pytorch":
        state = video_gc_training_state(path)
        if state is not None:
            cu.load_model_state(model, state, path)  # its errors name the keys that differ
            return
    from video_gc.models.weights import import_weights

    report = import_weights(cu.unwrap(model), path, fmt=cfg.TEST.CHECKPOINT_TYPE, inflate=False, strict=True,
                            require_head=True, require_context=True)
    logger.info("%s", report.format())


# What decides the network a checkpoint's weights belong to: its structure, its classes and its input
# channels. A tool given a checkpoint builds the model from the checkpoint's own values. The clip
# length (DATA.NUM_FRAMES) is a test setting taken with its sampling rate from --cfg, except where
# the weights depend on it (a CGD with per-frame weights).
MODEL_SECTIONS = ("MODEL", "RESNET", "NONLOCAL", "CONTEXT")
MODEL_DATA_KEYS = ("DATA.INPUT_CHANNEL_NUM",)


def flatten_config(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested config dict."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten_config(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _nest(values: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def _is_model_leaf(cfg, key: str) -> bool:
    """``key`` is a model-defining key that ``cfg`` has (a stored config may be of another version)."""
    if key.split(".")[0] not in MODEL_SECTIONS and key not in MODEL_DATA_KEYS:
        return False
    try:
        return not isinstance(get_key(cfg, key), CfgNode)
    except (KeyError, TypeError):
        return False


def stored_config(path: str) -> dict:
    """The config a video_gc checkpoint stores (YAML under "cfg"), as a dict; {} for any other file:
    a PySlowFast or Detectron file stores its own tool's config, whose keys share names with ours
    but not always meanings."""
    from video_gc.models.weights import read_checkpoint
    from video_gc.models.weights.formats import unwrap_state

    obj = read_checkpoint(path)
    text = obj.get("cfg") if isinstance(obj, Mapping) else None
    if not isinstance(text, str) or not _has_video_gc_names(unwrap_state(obj, path), path):
        return {}
    try:
        stored = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CheckpointError(f"checkpoint {path}: the config it stores is not valid YAML ({err})") from err
    return stored if isinstance(stored, dict) else {}


def model_config_from_checkpoint(cfg, path: str, opts: Sequence[str] = ()) -> CfgNode:
    """``cfg`` with the model-defining keys (MODEL_SECTIONS, MODEL_DATA_KEYS) of the config stored in
    the checkpoint at ``path``, so a tool builds the network the weights were trained as without the
    user repeating every training override. Keys set in ``opts`` (the command line's KEY VALUE pairs)
    keep the user's value; the rest of ``cfg`` (data, test settings) stays. Logs one line."""
    raw = stored_config(path)
    upgrade_config(raw, f"the config stored in {path}", cfg.CONFIG_VERSION)
    stored = {key: value for key, value in flatten_config(raw) if _is_model_leaf(cfg, key)}
    context = raw.get("CONTEXT", {}) if isinstance(raw.get("CONTEXT"), dict) else {}
    if context.get("TYPE") == "cgd" and context.get("CGD", {}).get("SHARE_TEMPORAL") is False:
        stored["DATA.NUM_FRAMES"] = raw.get("DATA", {}).get("NUM_FRAMES", cfg.DATA.NUM_FRAMES)
    kept = sorted(set(opts[0::2]) & set(stored))
    taken = {key: value for key, value in stored.items() if key not in kept}
    if not taken:
        return cfg
    out = cfg.clone()
    out.defrost()
    try:
        merge_config_dict(out, _nest(taken), f"the config stored in {path}")
        validate_cfg(out)
    except (ConfigError, KeyError, ValueError, AssertionError, TypeError) as err:
        raise ConfigError(f"the model config stored in {path}: {err}") from err
    differ = [f"{key} (--cfg {get_key(cfg, key)!r}, checkpoint {get_key(out, key)!r})"
              for key in taken if get_key(cfg, key) != get_key(out, key)]
    kept_note = "".join(f"; --opts kept {key} {get_key(cfg, key)!r} (checkpoint {stored[key]!r})" for key in kept)
    if differ:  # the --cfg file describes another model: worth a warning
        logger.warning("model config taken from checkpoint %s; it differs from the --cfg file in %s%s",
                       path, ", ".join(differ), kept_note)
    else:
        logger.info("model config taken from checkpoint %s (as in the --cfg file)%s", path, kept_note)
    return out


def checkpoint_config_for_run(cfg, opts: Sequence[str]) -> CfgNode:
    """tools/run_net.py: a test-only run (TRAIN.ENABLE False) of TEST.CHECKPOINT_FILE_PATH builds the
    model that file holds (model_config_from_checkpoint); a training run builds the one its config says."""
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if cfg.TRAIN.ENABLE or not cfg.TEST.ENABLE or not os.path.isfile(path):
        return cfg  # a missing file is the test's own error to report
    try:
        return model_config_from_checkpoint(cfg, path, opts)
    except CheckpointError as err:  # run_net reports config errors before any process starts
        raise ConfigError(f"TEST.CHECKPOINT_FILE_PATH: {err}") from err


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


# What the clip fed to a model depends on. They come from the run's config, not the checkpoint's:
# a tool reading clips with other values than the weights were trained with says so.
PREPROCESSING_KEYS = ("DATA.SAMPLING_RATE", "DATA.TARGET_FPS", "DATA.MEAN", "DATA.STD", "DATA.TEST_CROP_SIZE",
                      "DATA.DECODING_SHORT_SIZE", "DATA.REVERSE_INPUT_CHANNEL")


def warn_if_preprocessing_differs(cfg, checkpoint: str, advice: str) -> list[str]:
    """Warn (and return the differences) when the checkpoint's stored config trained on other clips
    than ``cfg`` makes; ``advice`` ends the warning."""
    try:
        stored = dict(flatten_config(stored_config(checkpoint)))
    except CheckpointError:
        return []  # loading the weights already vetted the file; a broken config is not this check's concern
    differ = [f"{key} (config {get_key(cfg, key)!r}, checkpoint {stored[key]!r})"
              for key in PREPROCESSING_KEYS if key in stored and stored[key] != get_key(cfg, key)]
    if differ:
        get_logger().warning("clips are read with other settings than %s was trained with: %s; %s", checkpoint,
                             ", ".join(differ), advice)
    return differ

