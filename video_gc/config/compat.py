"""PySlowFast compatibility keys: loaded so PySlowFast YAMLs work unchanged, never used.

A run reports, once at start, the compatibility keys whose value differs from
the default. Only those are reported because only they ask for something
video_gc does not do: a key left at its default (which every PySlowFast YAML
carries implicitly) asks for nothing, and listing all of them on every run
would hide the one a user actually set. The comparison is on values, so a key
set by the YAML or by ``--opts`` is reported alike.
"""

from __future__ import annotations

from video_gc.config import get_key
from video_gc.config.defaults import get_defaults

COMPAT_KEYS = (
    # Dataset names: one Kinetics-style CSV dataset serves every split, whatever the name.
    "TRAIN.DATASET",
    "TEST.DATASET",
    # PySlowFast's ImageNet / AVA loaders only (PCA lighting jitter, preloaded image lists).
    "DATA.TRAIN_PCA_EIGVAL",
    "DATA.TRAIN_PCA_EIGVEC",
    "DATA.PATH_TO_PRELOAD_IMDB",
    # Augmentation not implemented: a crop box that moves over time.
    "DATA.TRAIN_JITTER_MOTION_SHIFT",
    # Multi-pathway (SlowFast) model tables; video_gc builds one pathway.
    "MODEL.SINGLE_PATHWAY_ARCH",
    "MODEL.MULTI_PATHWAY_ARCH",
    # PySlowFast's own LR schedules ignore these too: warm-up starts at WARMUP_START_LR, no exp/step policy.
    "SOLVER.WARMUP_FACTOR",
    "SOLVER.GAMMA",
    "SOLVER.STEP_SIZE",
    # The weight importer maps checkpoint layouts itself (TRAIN.CHECKPOINT_TYPE); no MViT init hook.
    "TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN",
    "TRAIN.CHECKPOINT_IN_INIT",
    # sync_batchnorm synchronises over all processes, never sub-groups.
    "BN.NUM_SYNC_DEVICES",
    # One decoding thread per loader worker; DATA_LOADER.NUM_WORKERS gives the parallelism.
    "DATA_LOADER.ENABLE_MULTI_THREAD_DECODE",
    # The one-line model summary is always logged.
    "LOG_MODEL_INFO",
)


def unused_keys(cfg) -> list[str]:
    """The compatibility keys whose value in ``cfg`` differs from the default."""
    defaults = get_defaults()
    return [key for key in COMPAT_KEYS if get_key(cfg, key) != get_key(defaults, key)]


def report_unused(cfg, logger) -> list[str]:
    """Warn once (call it at the start of a run, on one process) about the unused keys set."""
    keys = unused_keys(cfg)
    if keys:
        logger.warning("loaded but not used by video_gc: %s", ", ".join(keys))
    return keys
