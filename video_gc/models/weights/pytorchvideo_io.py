"""Export of video_gc backbones to PyTorchVideo's ``create_resnet`` layout.

Import goes through :func:`video_gc.models.weights.import_weights` (format
``pytorchvideo``). Export renames our state dict so that
``pytorchvideo.models.hub.slow_r50()`` (from our ``slow``) or ``c2d_r50()``
(from our ``c2d``) accept it with ``load_state_dict``.

PyTorchVideo's ResNet has no context blocks; a model with NL / GC / SNL / SE /
NA / CGD blocks cannot be exported (an error lists the keys).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch

from video_gc.registry import ARCHS

from . import names

# Our archs that PyTorchVideo has a model of, and its hub builder.
PYTORCHVIDEO_BUILDERS = {"slow": "slow_r50", "c2d": "c2d_r50", "i3d": "i3d_r50"}
# Builders whose model has a max-pool module after res2 (``stage1_pool``), shifting later block indices by one.
STAGE1_POOL_BUILDERS = ("c2d_r50", "i3d_r50")


def pytorchvideo_builder(arch: str) -> str:
    """The PyTorchVideo hub builder of MODEL.ARCH ``arch`` (an alias, e.g. slowonly, counts as the arch
    it names); ValueError for an arch PyTorchVideo has no model of: its names would load nowhere."""
    for name, builder in PYTORCHVIDEO_BUILDERS.items():
        if ARCHS[name] is ARCHS[arch]:
            return builder
    mapped = ", ".join(f"{name} ({builder})" for name, builder in PYTORCHVIDEO_BUILDERS.items())
    raise ValueError(f"cannot export MODEL.ARCH {arch} to PyTorchVideo: it has no such model; "
                     f"the archs that export are {mapped}")


def export_pytorchvideo(state: Mapping[str, torch.Tensor], *, arch: str) -> "OrderedDict[str, torch.Tensor]":
    """Our ``model.state_dict()`` (for MODEL.ARCH ``arch``) -> PyTorchVideo names."""
    stage1_pool = pytorchvideo_builder(arch) in STAGE1_POOL_BUILDERS
    stages = {int(k[3]) for k in state if k.startswith("res")}
    num_stages = len(stages) or 4
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unsupported = []
    for key, value in state.items():
        new = names.ours_to_pytorchvideo(key, stage1_pool=stage1_pool, num_stages=num_stages)
        if new is None:
            unsupported.append(key)
        else:
            out[new] = value
    if unsupported:
        shown = ", ".join(unsupported[:6]) + (" ..." if len(unsupported) > 6 else "")
        raise ValueError(
            f"cannot export to PyTorchVideo's ResNet layout: it has no place for {len(unsupported)} "
            f"keys ({shown}); only plain ResNet backbones (CONTEXT.TYPE none, no NONLOCAL) export"
        )
    return out
