"""Freezing for fine-tuning: the early stages (TRAIN.FREEZE_UP_TO) and BatchNorm (BN.FREEZE).

- ``TRAIN.FREEZE_UP_TO``: ``none`` | ``stem`` | ``res2`` | ``res3`` | ``res4`` | ``res5``.
  The stem and every stage up to and including the named one are frozen: their
  parameters get ``requires_grad`` False (the optimizer leaves them out: no update,
  no weight decay) and their modules stay in eval mode while training, so their BN
  running statistics stay as loaded. Context blocks inside a frozen stage freeze
  with it.
- ``BN.FREEZE``: every BatchNorm layer stays in eval mode while training: it
  normalises with its running statistics, which no longer change. With
  ``BN.FREEZE_AFFINE`` (default True) its scale and shift are frozen too.
  ``BN.FREEZE_PARTIAL`` leaves the first BN layer (the stem's) training, statistics
  and affine: partial BN, which lets the first layer adapt to the new data's input
  distribution while the small fine-tuning batches cannot disturb the others.

:func:`freeze_model` sets ``requires_grad`` once, before the optimizer is built.
``model.train()`` puts every module back in training mode, so :func:`set_frozen_modes`
must follow each ``model.train()``. Both take the bare model (not a DDP wrapper).
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

STAGES = ("stem", "res2", "res3", "res4", "res5")


def frozen_stages(cfg) -> tuple[str, ...]:
    """The stage names TRAIN.FREEZE_UP_TO freezes, in model order."""
    up_to = cfg.TRAIN.FREEZE_UP_TO
    return () if up_to == "none" else STAGES[:STAGES.index(up_to) + 1]


def _stage_modules(model: nn.Module, cfg) -> list[nn.Module]:
    names = frozen_stages(cfg)
    missing = [name for name in names if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise ValueError(f"TRAIN.FREEZE_UP_TO {cfg.TRAIN.FREEZE_UP_TO}: {type(model).__name__} has no "
                         f"module {', '.join(missing)}")
    return [getattr(model, name) for name in names]


def _frozen_bn_layers(model: nn.Module, cfg) -> list[nn.Module]:
    """The BatchNorm layers BN.FREEZE holds in eval mode (all but the first with BN.FREEZE_PARTIAL)."""
    if not cfg.BN.FREEZE:
        return []
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return layers[1:] if cfg.BN.FREEZE_PARTIAL else layers


def set_frozen_modes(model: nn.Module, cfg) -> None:
    """Put the frozen stages and BN layers in eval mode; call after every ``model.train()``."""
    for module in _stage_modules(model, cfg) + _frozen_bn_layers(model, cfg):
        module.eval()


def freeze_model(model: nn.Module, cfg) -> int:
    """Freeze what the config freezes (see module doc); returns the number of frozen parameter tensors."""
    stages = _stage_modules(model, cfg)
    bn_layers = _frozen_bn_layers(model, cfg)
    modules = stages + (bn_layers if cfg.BN.FREEZE_AFFINE else [])
    params = {id(p): p for module in modules for p in module.parameters()}
    for param in params.values():
        param.requires_grad_(False)
    set_frozen_modes(model, cfg)
    if stages or bn_layers:
        total = sum(p.numel() for p in model.parameters())
        frozen = sum(p.numel() for p in params.values())
        logger.info("fine-tuning freeze: stages %s; BN statistics frozen in %d layers%s%s; %d tensors (%s of %s "
                    "parameters) frozen", ", ".join(frozen_stages(cfg)) or "none", len(bn_layers),
                    " (partial BN: the first keeps training)" if cfg.BN.FREEZE_PARTIAL else "",
                    ", their affine too" if bn_layers and cfg.BN.FREEZE_AFFINE else "", len(params),
                    f"{frozen:,}", f"{total:,}")
    return len(params)
