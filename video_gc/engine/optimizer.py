"""The optimizer (SGD, Adam or AdamW) with per-group weight decay and a head LR multiplier.

Groups, first match wins:

1. ``norm``: parameters of BatchNorm / SyncBatchNorm / LayerNorm / GroupNorm
   layers (including the LayerNorm inside GC blocks) -> ``BN.WEIGHT_DECAY``.
2. a block's own group: parameters of a context block whose registry entry names
   a ``decay_group`` -> ``SOLVER.WEIGHT_DECAY * CONTEXT.<GROUP>.WEIGHT_DECAY_MULT``.
   CGD's is ``cgd`` (the CGD paper halves the decay of its descriptor). CGD's
   weights are vectors, so this rule comes before ``ZERO_WD_1D_PARAM``; otherwise
   that switch would silently zero them.
3. ``no_decay_1d``: with ``SOLVER.ZERO_WD_1D_PARAM``, every other parameter with
   at most one dimension (biases, NA's scalars) -> 0.
4. ``default``: everything else -> ``SOLVER.WEIGHT_DECAY``.

With ``SOLVER.HEAD_LR_MULT`` other than 1, the head's parameters go to their own
groups ``head_<group>`` (same decay rules) with ``lr_mult`` = HEAD_LR_MULT; every
other group has ``lr_mult`` 1. ``lr_policy.set_lr`` writes ``schedule lr * lr_mult``.
Parameters frozen by ``video_gc.engine.freeze`` (``requires_grad`` False) are in
no group. Every group records ``method`` (SOLVER.OPTIMIZING_METHOD), so a
checkpoint's optimizer state says which optimizer wrote it.

Empty groups are dropped; the group order is fixed, so an optimizer state saved
in a checkpoint always lines up with a freshly built optimizer of the same config
(:func:`check_optimizer_state` says which key differs when it does not).
"""

from __future__ import annotations

import torch
from torch import nn

from video_gc.registry import BLOCKS
from video_gc.utils.io import CheckpointError

from .freeze import freeze_model

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

# Group settings that come from the config: a saved optimizer state must agree on them.
_GROUP_KEYS = {
    "method": "SOLVER.OPTIMIZING_METHOD",
    "lr_mult": "SOLVER.HEAD_LR_MULT",
    "weight_decay": "SOLVER.WEIGHT_DECAY / BN.WEIGHT_DECAY / CONTEXT.<BLOCK>.WEIGHT_DECAY_MULT",
    "momentum": "SOLVER.MOMENTUM",
    "dampening": "SOLVER.DAMPENING",
    "nesterov": "SOLVER.NESTEROV",
    "betas": "SOLVER.BETAS",
}


def _head_ids(model: nn.Module, cfg) -> set[int]:
    """ids of the head's parameters when SOLVER.HEAD_LR_MULT asks for head groups, else empty."""
    if cfg.SOLVER.HEAD_LR_MULT == 1.0:
        return set()
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"SOLVER.HEAD_LR_MULT {cfg.SOLVER.HEAD_LR_MULT}: {type(model).__name__} has no 'head' module")
    return {id(p) for p in head.parameters()}


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Parameter groups with their weight decay and lr_mult, in a fixed order (see module doc)."""
    decay = cfg.SOLVER.WEIGHT_DECAY
    block_groups = {spec.module: spec.decay_group for _, spec in BLOCKS.items() if spec.decay_group}
    base = {"norm": cfg.BN.WEIGHT_DECAY}
    for name in dict.fromkeys(block_groups.values()):
        base[name] = decay * cfg.CONTEXT[name.upper()].WEIGHT_DECAY_MULT
    base["no_decay_1d"] = 0.0
    base["default"] = decay
    groups = {name: {"params": [], "weight_decay": wd, "lr_mult": 1.0} for name, wd in base.items()}
    groups.update({f"head_{name}": {"params": [], "weight_decay": wd, "lr_mult": cfg.SOLVER.HEAD_LR_MULT}
                   for name, wd in base.items()})
    head = _head_ids(model, cfg)
    # Parameters inside such a block belong to its group even when nested deeper.
    own_group = {id(p): group for m in model.modules() for cls, group in block_groups.items()
                 if isinstance(m, cls) for p in m.parameters()}
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES):
                name = "norm"
            elif id(param) in own_group:
                name = own_group[id(param)]
            elif cfg.SOLVER.ZERO_WD_1D_PARAM and param.ndim <= 1:
                name = "no_decay_1d"
            else:
                name = "default"
            groups[f"head_{name}" if id(param) in head else name]["params"].append(param)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grouped = sum(p.numel() for g in groups.values() for p in g["params"])
    assert grouped == total, f"parameter groups cover {grouped} of {total} parameters"
    method = cfg.SOLVER.OPTIMIZING_METHOD
    return [dict(group, name=name, method=method) for name, group in groups.items() if group["params"]]


def construct_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Freeze what the config freezes (:func:`video_gc.engine.freeze.freeze_model`), then build
    SOLVER.OPTIMIZING_METHOD over :func:`param_groups` of the parameters left to train.

    - ``sgd``: SOLVER.MOMENTUM, NESTEROV, DAMPENING; weight decay added to the gradient.
    - ``adam``: SOLVER.BETAS; weight decay added to the gradient (L2).
    - ``adamw``: SOLVER.BETAS; decoupled weight decay, ``p -= lr * weight_decay * p`` before
      the Adam step.
    """
    freeze_model(model, cfg)
    groups = param_groups(model, cfg)
    method = cfg.SOLVER.OPTIMIZING_METHOD
    if method == "sgd":
        return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                               dampening=cfg.SOLVER.DAMPENING, nesterov=cfg.SOLVER.NESTEROV)
    betas = tuple(float(b) for b in cfg.SOLVER.BETAS)
    if method == "adam":
        return torch.optim.Adam(groups, lr=cfg.SOLVER.BASE_LR, betas=betas)
    if method == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=betas)
    raise ValueError(f"SOLVER.OPTIMIZING_METHOD: unsupported value {method!r}; allowed: sgd, adam, adamw")


def _setting(group: dict, key: str):
    """A group's setting as the config gives it; the defaults are what checkpoints written before
    these keys were recorded used (SGD only, no multiplier)."""
    value = group.get(key, {"method": "sgd", "lr_mult": 1.0}.get(key))
    return tuple(float(v) for v in value) if key == "betas" and value is not None else value


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, path: str) -> None:
    """Raise CheckpointError unless ``saved`` (the ``optimizer_state`` of checkpoint ``path``)
    was written by an optimizer built from the same optimisation settings as ``optimizer``.

    Call it before ``optimizer.load_state_dict(saved)``: torch would either fail with an
    opaque error (another optimizer, other groups) or silently take the saved settings.
    """
    saved_groups = saved.get("param_groups", [])
    layout = [(g.get("name"), len(g["params"])) for g in saved_groups]
    current = [(g.get("name"), len(g["params"])) for g in optimizer.param_groups]
    saved_method = _setting(saved_groups[0], "method") if saved_groups else None
    method = _setting(optimizer.param_groups[0], "method")
    if saved_method != method:
        raise CheckpointError(
            f"{path}: its optimizer state is for SOLVER.OPTIMIZING_METHOD {saved_method!r}, this run builds "
            f"{method!r}; resume with SOLVER.OPTIMIZING_METHOD {saved_method}, or start a fresh run in another "
            f"OUTPUT_DIR")
    if layout != current:
        raise CheckpointError(
            f"{path}: its optimizer has other parameter groups (name, parameters) than this run: checkpoint "
            f"{layout}, this run {current}; resume with the SOLVER.HEAD_LR_MULT (1 or not), TRAIN.FREEZE_UP_TO, "
            f"BN.FREEZE, BN.FREEZE_AFFINE, BN.FREEZE_PARTIAL, SOLVER.ZERO_WD_1D_PARAM and CONTEXT settings it was "
            f"trained with")
    for old, new in zip(saved_groups, optimizer.param_groups):
        for key, cfg_key in _GROUP_KEYS.items():
            if key in new and _setting(old, key) != _setting(new, key):
                raise CheckpointError(
                    f"{path}: its optimizer group '{new['name']}' has {key} {_setting(old, key)!r}, this run "
                    f"{_setting(new, key)!r}; resume with the {cfg_key} it was trained with")
