"""SGD with per-group weight decay.

Groups, first match wins:

1. ``norm``: parameters of BatchNorm / SyncBatchNorm / LayerNorm / GroupNorm
   layers (including the LayerNorm inside GC blocks) -> ``BN.WEIGHT_DECAY``.
2. ``cgd``: parameters of Compact Global Descriptor blocks ->
   ``SOLVER.WEIGHT_DECAY * CONTEXT.CGD.WEIGHT_DECAY_MULT`` (the CGD paper halves
   the decay of its descriptor). CGD's weights are vectors, so this rule comes
   before ``ZERO_WD_1D_PARAM``; otherwise that switch would silently zero them.
3. ``no_decay_1d``: with ``SOLVER.ZERO_WD_1D_PARAM``, every other parameter with
   at most one dimension (biases, NA's scalars) -> 0.
4. ``default``: everything else -> ``SOLVER.WEIGHT_DECAY``.

Empty groups are dropped; the group order is fixed, so an optimizer state saved
in a checkpoint always lines up with a freshly built optimizer.
"""

from __future__ import annotations

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _cgd_type():
    from video_gc.models.blocks.cgd import CompactGlobalDescriptor

    return CompactGlobalDescriptor


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Parameter groups with their weight decay, in a fixed order (see module doc)."""
    cgd_type = _cgd_type()
    decay = cfg.SOLVER.WEIGHT_DECAY
    groups = {
        "norm": {"params": [], "weight_decay": cfg.BN.WEIGHT_DECAY},
        "cgd": {"params": [], "weight_decay": decay * cfg.CONTEXT.CGD.WEIGHT_DECAY_MULT},
        "no_decay_1d": {"params": [], "weight_decay": 0.0},
        "default": {"params": [], "weight_decay": decay},
    }
    seen: set[int] = set()
    # Parameters inside a CGD block belong to it even when nested deeper.
    cgd_params = {id(p) for m in model.modules() if isinstance(m, cgd_type) for p in m.parameters()}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES):
                name = "norm"
            elif id(param) in cgd_params:
                name = "cgd"
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
