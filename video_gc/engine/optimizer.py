"""SGD with per-group weight decay.

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

Empty groups are dropped; the group order is fixed, so an optimizer state saved
in a checkpoint always lines up with a freshly built optimizer.
"""

from __future__ import annotations

import torch
from torch import nn

from video_gc.registry import BLOCKS

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Parameter groups with their weight decay, in a fixed order (see module doc)."""
    decay = cfg.SOLVER.WEIGHT_DECAY
    block_groups = {spec.module: spec.decay_group for _, spec in BLOCKS.items() if spec.decay_group}
    groups = {"norm": {"params": [], "weight_decay": cfg.BN.WEIGHT_DECAY}}
    for name in dict.fromkeys(block_groups.values()):
        groups[name] = {"params": [], "weight_decay": decay * cfg.CONTEXT[name.upper()].WEIGHT_DECAY_MULT}
    groups["no_decay_1d"] = {"params": [], "weight_decay": 0.0}
    groups["default"] = {"params": [], "weight_decay": decay}
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
            groups[name]["params"].append(param)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grouped = sum(p.numel() for g in groups.values() for p in g["params"])
    assert grouped == total, f"parameter groups cover {grouped} of {total} parameters"
    return [dict(group, name=name) for name, group in groups.items() if group["params"]]


def construct_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, dampening from SOLVER) over :func:`param_groups`."""
    if cfg.SOLVER.OPTIMIZING_METHOD != "sgd":
        raise ValueError(f"SOLVER.OPTIMIZING_METHOD: unsupported value {cfg.SOLVER.OPTIMIZING_METHOD!r}; allowed: sgd")
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        dampening=cfg.SOLVER.DAMPENING,
        nesterov=cfg.SOLVER.NESTEROV,
    )
