"""Configuration: fvcore CfgNode defaults, loading and validation.

    from video_gc.config import get_cfg, load_config
    cfg = load_config("configs/kinetics/SLOW_8x8_R50_GC.yaml", ["SOLVER.BASE_LR", "0.05"])

Every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode

from video_gc.registry import ARCHS, BLOCKS, DEPTHS, INFERENCE_MODES, WEIGHT_FORMATS

from .defaults import get_defaults

__all__ = ["CfgNode", "ConfigError", "allowed_values", "get_cfg", "get_key", "load_config", "merge_config_dict",
           "upgrade_config", "validate_cfg"]

# Keys whose allowed values are one of the package's registries (the tables themselves).
_REGISTRY_KEYS = {
    "MODEL.ARCH": ARCHS,
    "RESNET.DEPTH": DEPTHS,
    "TRAIN.CHECKPOINT_TYPE": WEIGHT_FORMATS,
    "TEST.CHECKPOINT_TYPE": WEIGHT_FORMATS,
    "TEST.INFERENCE_MODE": INFERENCE_MODES,
}

# Keys with a closed set of values that no table of the package owns: key -> allowed values.
CHOICES = {
    "MODEL.MODEL_NAME": ("ResNet",),
    "MODEL.LOSS_FUNC": ("cross_entropy", "soft_cross_entropy"),
    "RESNET.TRANS_FUNC": ("bottleneck_transform",),
    "DATA.DECODING_BACKEND": ("decord", "pyav"),
    "DATA.FORMAT": ("video", "frames"),
    "DATA.NORMALIZE_ON_DEVICE": ("auto", "always", "never"),
    "DATA.ENSEMBLE_METHOD": ("sum", "max"),
    "SOLVER.LR_POLICY": ("cosine", "steps_with_relative_lrs", "constant"),
    "SOLVER.OPTIMIZING_METHOD": ("sgd", "adam", "adamw"),
    "TRAIN.FREEZE_UP_TO": ("none", "stem", "res2", "res3", "res4", "res5"),
    "BN.NORM_TYPE": ("batchnorm", "sync_batchnorm"),
    "TRAIN.MIXED_PRECISION_DTYPE": ("fp16", "bf16"),
    "TRAIN.CHECKPOINT_INFLATE_MODE": ("average", "center"),
}

# PySlowFast keys that load for compatibility but whose other values video_gc does not
# implement: key -> the one supported value (anything else would be silently ignored).
UNSUPPORTED = {
    "MODEL.HEAD_ACT": "softmax",
    "MODEL.DROPCONNECT_RATE": 0.0,
    "BN.NUM_SPLITS": 1,
    "DATA.MULTI_LABEL": False,
    "DATA.REVERSE_INPUT_CHANNEL": False,
}


def allowed_values() -> dict:
    """key -> allowed values for every key with a closed set, read from the registries
    (context blocks add CONTEXT.TYPE and the keys of their own settings)."""
    allowed = dict(CHOICES)
    allowed.update({key: registry.names() for key, registry in _REGISTRY_KEYS.items()})
    blocks = BLOCKS.items()
    allowed["CONTEXT.TYPE"] = ("none",) + tuple(name for name, spec in blocks if spec.selectable)
    for _, spec in blocks:
        allowed.update(spec.choices)
    return allowed


class ConfigError(ValueError):
    """A config value or key that video_gc cannot use."""


def get_cfg() -> CfgNode:
    """The default config (a fresh copy)."""
    return get_defaults()


def get_key(cfg: CfgNode, key: str):
    """The value of a dotted key, e.g. ``get_key(cfg, "DATA.NUM_FRAMES")``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


# fvcore's wording for a value whose type differs from the default's (values may span lines).
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\) with values \((.*) vs\. (.*)\) "
    r"for config key: (\S+)", re.DOTALL)


def _explain_merge_error(err: Exception, source: str, cfg: CfgNode) -> ConfigError:
    msg = str(err).strip("'\"")
    mismatch = _TYPE_MISMATCH.search(msg)
    if mismatch:
        want, got, default, value, key = mismatch.groups()
        try:
            node = get_key(cfg, key)
        except KeyError:
            node = None
        if isinstance(node, CfgNode):
            return ConfigError(
                f"{source}: config key {key}: invalid value {value} of type {got}; allowed values: a section "
                f"with keys {', '.join(node)}"
            )
        return ConfigError(
            f"{source}: config key {key}: invalid value {value} of type {got.rsplit('.', 1)[-1]}; allowed values: "
            f"type {want.rsplit('.', 1)[-1]} (default {default})"
        )
    if isinstance(err, KeyError) and "Non-existent config key" in msg:
        key = msg.split(":", 1)[1].strip()
        close = difflib.get_close_matches(key, _all_keys(cfg), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return ConfigError(f"{source}: unknown config key '{key}'{hint}")
    return ConfigError(f"{source}: {msg}")


def _widen_ints(data: dict, defaults: CfgNode) -> dict:
    """YAML writes 34 for 34.0; accept an int wherever the default is a float, and a bare
    string wherever the default is a list of strings (``FUSION: add`` for ``[add]``)."""
    out = {}
    for key, value in data.items():
        default = defaults.get(key) if isinstance(defaults, CfgNode) else None
        if isinstance(value, dict) and isinstance(default, CfgNode):
            value = _widen_ints(value, default)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif (isinstance(default, list) and default and all(isinstance(v, str) for v in default)
              and isinstance(value, str) and not value.startswith("[")):
            value = [value]  # "[mul, add]" (names unquoted) stays a string: fvcore's type error says a list is needed
        out[key] = value
    return out


def load_config(path: str | None = None, opts: Sequence[str] | None = None) -> CfgNode:
    """Defaults, then the YAML file, then KEY VALUE overrides; validated."""
    cfg = get_cfg()
    if path:
        try:
            data = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
        except FileNotFoundError as err:
            # The missing file may be a _BASE_ the config names, not the config itself.
            missing = err.filename or path
            where = "" if os.path.abspath(missing) == os.path.abspath(path) else f" (the _BASE_ of {path})"
            raise ConfigError(f"config file not found: {missing}{where}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        except TypeError as err:  # fvcore's reaction to an empty file or a bare scalar
            raise ConfigError(f"{path}: expected a mapping of config sections ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections, got a {type(data).__name__}")
        merge_config_dict(cfg, data, path)
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"--opts needs KEY VALUE pairs, got an odd number of items: {list(opts)}")
        try:
            for key, raw in zip(opts[0::2], opts[1::2]):
                value = CfgNode._decode_cfg_value(raw)
                *parents, leaf = key.split(".")
                cfg.merge_from_other_cfg(CfgNode(_widen_ints(_nest(parents, {leaf: value}), cfg)))
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise _explain_merge_error(err, "--opts", cfg) from err
    validate_cfg(cfg)
    return cfg


# Keys that version 1 (video_gc before CONFIG_VERSION) wrote to every config.yaml but never
# read; from version 2 on they act, so a version-1 file's values are dropped.
_UNREAD_IN_VERSION_1 = ("DATA.USE_OFFSET_SAMPLING", "DATA.DECODING_SHORT_SIZE")


def upgrade_config(data: dict, source: str, current: int) -> None:
    """Read a config written by an earlier video_gc as it was meant, in place.

    A dict without CONFIG_VERSION that sets TEST.INFERENCE_MODE is a version-1 dump (a
    PySlowFast YAML has no such key), as is one that says CONFIG_VERSION 1: its values of
    keys that version 1 never read are dropped, and an NA model keeps the std form it was
    trained with (``biased``); a warning names what changed. ``source`` names the file.
    """
    test = data.get("TEST")
    dump = isinstance(test, dict) and "INFERENCE_MODE" in test
    version = data.get("CONFIG_VERSION", 1 if dump else current)
    if not isinstance(version, int) or not 1 <= version <= current:
        raise ConfigError(f"{source}: config key CONFIG_VERSION: invalid value {version!r}; allowed values: 1.."
                          f"{current} (a larger one was written by a newer video_gc)")
    if version == current:
        return
    changed = []
    for key in _UNREAD_IN_VERSION_1:
        section, leaf = key.split(".")
        if isinstance(data.get(section), dict) and leaf in data[section]:
            changed.append(f"ignoring {key} {data[section].pop(leaf)!r}, which it did not read")
    context = data.get("CONTEXT")
    if isinstance(context, dict) and context.get("TYPE") == "na" and "STD_FORM" not in context.get("NA", {}):
        context.setdefault("NA", {})["STD_FORM"] = "biased"
        changed.append("CONTEXT.NA.STD_FORM biased, the NA form it trained with")
    data["CONFIG_VERSION"] = current
    if changed:
        logging.getLogger("video_gc.config").warning(
            "%s: a config of an earlier video_gc (CONFIG_VERSION 1); %s (set CONFIG_VERSION: %d in the file to "
            "read it as written)", source, "; ".join(changed), current)


def merge_config_dict(cfg: CfgNode, data: dict, source: str) -> None:
    """Merge a config dict (a YAML file's, or the one a checkpoint stores) into ``cfg``, upgraded
    from an earlier version and coerced like a file; errors name ``source``."""
    upgrade_config(data, source, cfg.CONFIG_VERSION)
    try:
        cfg.merge_from_other_cfg(CfgNode(_widen_ints(data, cfg)))
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        raise _explain_merge_error(err, source, cfg) from err


def _nest(parents: list[str], leaf: dict) -> dict:
    for name in reversed(parents):
        leaf = {name: leaf}
    return leaf


def _check_choice(cfg: CfgNode, key: str, allowed: Iterable) -> None:
    """The value is one of ``allowed``; a list value, a non-empty list of distinct ones."""
    value = get_key(cfg, key)
    allowed = tuple(allowed)
    if isinstance(value, (list, tuple)):
        ok = value and len(set(value)) == len(value) and all(v in allowed for v in value)
        form = "a list of distinct values from "
    else:
        ok, form = value in allowed, ""
    if not ok:
        raise ConfigError(
            f"config key {key}: invalid value {value!r}; allowed values: {form}{', '.join(map(str, allowed))}"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _per_stage(cfg: CfgNode, key: str, depths: Sequence[int], form: str, valid) -> None:
    """Check a PySlowFast per-stage list: one entry per stage res2..res5, each a one-pathway list
    ``[x]`` whose x satisfies ``valid(x, stage_depth)``; ``form`` describes x for the message."""
    value = get_key(cfg, key)
    if not isinstance(value, (list, tuple)) or len(value) != len(depths):
        raise ConfigError(
            f"config key {key}: invalid value {value!r}; allowed values: one entry per stage res2..res5 "
            f"({len(depths)}), each [{form}]"
        )
    for stage, (entry, depth) in enumerate(zip(value, depths), start=2):
        if not isinstance(entry, (list, tuple)) or len(entry) != 1 or not valid(entry[0], depth):
            raise ConfigError(
                f"config key {key}: invalid value {entry!r} in res{stage}; allowed values: [{form}] "
                f"(one pathway; res{stage} has {depth} blocks)"
            )


def _check_locations(key: str, location, depths: Sequence[int], nested: bool) -> None:
    if not isinstance(location, (list, tuple)) or len(location) != len(depths):
        raise ConfigError(
            f"config key {key}: expected one entry per stage res2..res5 ({len(depths)}), got {location!r}"
        )
    for stage, (entry, depth) in enumerate(zip(location, depths), start=2):
        shape_ok = isinstance(entry, (list, tuple)) and (
            not nested or (len(entry) == 1 and isinstance(entry[0], (list, tuple))))
        if not shape_ok:
            form = "[[i, j, ...]] (one pathway)" if nested else "[i, j, ...]"
            raise ConfigError(
                f"config key {key}: invalid value {entry!r} in res{stage}; allowed values: {form}, 0-based block "
                f"indices, e.g. {'[[[]], [[1, 3]], [[1, 3, 5]], [[]]]' if nested else '[[], [1, 3], [1, 3, 5], []]'}"
            )
        indices = list(entry[0]) if nested else list(entry)
        for idx in indices:
            if not _is_int(idx) or not 0 <= idx < depth:
                raise ConfigError(
                    f"config key {key}: block index {idx!r} in res{stage} is out of range; "
                    f"allowed values: 0..{depth - 1} (res{stage} has {depth} blocks at depth {sum(depths) * 3 + 2})"
                )


def _check_fine_tuning(cfg: CfgNode) -> None:
    """SOLVER.BETAS / HEAD_LR_MULT, MIXUP and the BN / stage freezing keys."""
    betas = cfg.SOLVER.BETAS
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"config key SOLVER.BETAS: invalid value {list(betas)!r}; allowed values: [beta1, beta2], "
                          f"each in [0, 1)")
    bounds = (("SOLVER.HEAD_LR_MULT", lambda v: v > 0, "a number > 0"),
              ("MIXUP.ALPHA", lambda v: v >= 0, "a number >= 0 (0 turns mixup off)"),
              ("MIXUP.CUTMIX_ALPHA", lambda v: v >= 0, "a number >= 0 (0 turns cutmix off)"),
              ("MIXUP.PROB", lambda v: 0 <= v <= 1, "[0, 1]"),
              ("MIXUP.SWITCH_PROB", lambda v: 0 <= v <= 1, "[0, 1]"),
              ("MIXUP.LABEL_SMOOTH_VALUE", lambda v: 0 <= v < 1, "[0, 1)"))
    for key, ok, allowed in bounds:
        if not ok(get_key(cfg, key)):
            raise ConfigError(f"config key {key}: invalid value {get_key(cfg, key)!r}; allowed values: {allowed}")
    if cfg.MIXUP.ENABLE and cfg.MIXUP.ALPHA == 0 and cfg.MIXUP.CUTMIX_ALPHA == 0:
        raise ConfigError("config key MIXUP.ENABLE: invalid value True with MIXUP.ALPHA 0 and MIXUP.CUTMIX_ALPHA 0 "
                          "(nothing to mix); allowed values: False, or one of the alphas > 0")
    if cfg.MIXUP.ENABLE and cfg.MODEL.LOSS_FUNC != "soft_cross_entropy":
        raise ConfigError(f"config key MODEL.LOSS_FUNC: invalid value {cfg.MODEL.LOSS_FUNC!r} with MIXUP.ENABLE "
                          f"True; allowed values: soft_cross_entropy (mixed targets are soft)")
    if not cfg.BN.FREEZE and (cfg.BN.FREEZE_PARTIAL or not cfg.BN.FREEZE_AFFINE):
        raise ConfigError("config keys BN.FREEZE_PARTIAL / BN.FREEZE_AFFINE: set with BN.FREEZE False, where they do "
                          "nothing; allowed values: BN.FREEZE True, or their defaults (False / True)")
    if cfg.BN.FREEZE_PARTIAL and cfg.TRAIN.FREEZE_UP_TO != "none":
        raise ConfigError(f"config key BN.FREEZE_PARTIAL: invalid value True with TRAIN.FREEZE_UP_TO "
                          f"{cfg.TRAIN.FREEZE_UP_TO!r}, which freezes the stem's BN it would keep training; allowed "
                          f"values: False, or TRAIN.FREEZE_UP_TO none")
    if cfg.BN.USE_PRECISE_STATS and (cfg.BN.FREEZE or cfg.TRAIN.FREEZE_UP_TO != "none"):
        raise ConfigError("config key BN.USE_PRECISE_STATS: invalid value True with BN.FREEZE or "
                          "TRAIN.FREEZE_UP_TO: it would recompute the frozen BN statistics; allowed values: False")


def validate_cfg(cfg: CfgNode) -> CfgNode:
    """Raise ConfigError naming the key, value and allowed values for anything unusable."""
    if cfg.CONFIG_VERSION != get_defaults().CONFIG_VERSION:
        raise ConfigError(f"config key CONFIG_VERSION: invalid value {cfg.CONFIG_VERSION!r}; allowed values: "
                          f"{get_defaults().CONFIG_VERSION} (an older file is upgraded when it is loaded)")
    for key, allowed in allowed_values().items():
        _check_choice(cfg, key, allowed)
    depths = DEPTHS[cfg.RESNET.DEPTH]
    _check_locations("NONLOCAL.LOCATION", cfg.NONLOCAL.LOCATION, depths, nested=True)
    _check_locations("CONTEXT.LOCATION", cfg.CONTEXT.LOCATION, depths, nested=False)
    # TYPE none places nothing: any position some block takes is accepted.
    specs = [BLOCKS[cfg.CONTEXT.TYPE]] if cfg.CONTEXT.TYPE != "none" else [s for _, s in BLOCKS.items() if s.selectable]
    _check_choice(cfg, "CONTEXT.POSITION", ("default",) + tuple(dict.fromkeys(p for s in specs for p in s.positions)))
    if len(cfg.NONLOCAL.GROUP) != len(depths):
        raise ConfigError(
            f"config key NONLOCAL.GROUP: invalid value {cfg.NONLOCAL.GROUP!r}; allowed values: one entry per stage "
            f"res2..res5"
        )
    for stage, entry in enumerate(cfg.NONLOCAL.GROUP, start=2):
        if not isinstance(entry, (list, tuple)) or any(g != 1 for g in entry):
            raise ConfigError(
                f"config key NONLOCAL.GROUP: invalid value {entry!r} in res{stage}; allowed values: [1] "
                "(grouped non-local blocks are not implemented)"
            )
    if cfg.CONTEXT.TYPE != "none" and not any(cfg.CONTEXT.LOCATION):
        raise ConfigError(
            f"config key CONTEXT.LOCATION: invalid value {list(cfg.CONTEXT.LOCATION)!r} for CONTEXT.TYPE "
            f"{cfg.CONTEXT.TYPE!r} (no block would get one); allowed values: per stage res2..res5 the 0-based "
            f"indices of the blocks that get it, e.g. [[], [1, 3], [1, 3, 5], []]"
        )
    _per_stage(cfg, "RESNET.NUM_BLOCK_TEMP_KERNEL", depths, "n with 0 <= n <= the stage's blocks",
               lambda n, depth: _is_int(n) and 0 <= n <= depth)
    for key in ("RESNET.SPATIAL_STRIDES", "RESNET.SPATIAL_DILATIONS"):
        _per_stage(cfg, key, depths, "a positive integer", lambda n, depth: _is_int(n) and n > 0)
    # PySlowFast lists a pool per pathway ([[1, 2, 2], [1, 2, 2]] per stage); the first is the one used.
    pool = cfg.NONLOCAL.POOL
    if not isinstance(pool, (list, tuple)) or len(pool) != len(depths) or not all(
            isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], (list, tuple)) and len(entry[0]) == 3
            and all(_is_int(k) and k > 0 for k in entry[0]) for entry in pool):
        raise ConfigError(
            f"config key NONLOCAL.POOL: invalid value {pool!r}; allowed values: one entry per stage res2..res5, "
            f"each [[t, h, w], ...] of positive integers (one [t, h, w] per pathway)"
        )
    channels = cfg.DATA.INPUT_CHANNEL_NUM
    if not channels or not all(_is_int(c) and c > 0 for c in channels):
        raise ConfigError(
            f"config key DATA.INPUT_CHANNEL_NUM: invalid value {channels!r}; allowed values: [C] with C > 0 "
            f"(one pathway)"
        )
    for key, supported in UNSUPPORTED.items():
        if get_key(cfg, key) != supported:
            raise ConfigError(
                f"config key {key}: invalid value {get_key(cfg, key)!r}; allowed values: {supported!r} "
                f"(PySlowFast option that video_gc does not implement)"
            )
    positive = ("DATA.NUM_FRAMES", "DATA.SAMPLING_RATE", "DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE",
                "MODEL.NUM_CLASSES", "TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "RESNET.WIDTH_PER_GROUP",
                "RESNET.NUM_GROUPS",
                "TEST.NUM_ENSEMBLE_VIEWS", "TEST.NUM_SPATIAL_CROPS", "SOLVER.MAX_EPOCH", "AUG.NUM_SAMPLE",
                "DATA_LOADER.PREFETCH_FACTOR")
    for key in positive:
        value = get_key(cfg, key)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"config key {key}: invalid value {value!r}; allowed values: a positive integer")
    if cfg.TEST.NUM_SPATIAL_CROPS not in (1, 3):
        raise ConfigError(
            f"config key TEST.NUM_SPATIAL_CROPS: invalid value {cfg.TEST.NUM_SPATIAL_CROPS!r}; allowed values: 1, 3"
        )
    if not 0.0 < cfg.CONTEXT.GC.RATIO <= 1.0:
        raise ConfigError(f"config key CONTEXT.GC.RATIO: invalid value {cfg.CONTEXT.GC.RATIO!r}; allowed values: (0, 1]")
    if not 0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0:
        raise ConfigError(f"config key MODEL.DROPOUT_RATE: invalid value {cfg.MODEL.DROPOUT_RATE!r}; allowed values: [0, 1)")
    if cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs" and len(cfg.SOLVER.STEPS) != len(cfg.SOLVER.LRS):
        raise ConfigError(
            f"config keys SOLVER.STEPS / SOLVER.LRS: need the same length, got {list(cfg.SOLVER.STEPS)} "
            f"and {list(cfg.SOLVER.LRS)}"
        )
    jitter = cfg.DATA.TRAIN_JITTER_SCALES
    if len(jitter) != 2 or jitter[0] > jitter[1]:
        raise ConfigError(f"config key DATA.TRAIN_JITTER_SCALES: invalid value {list(jitter)!r}; allowed values: [min, max]")
    _check_fine_tuning(cfg)
    return cfg
