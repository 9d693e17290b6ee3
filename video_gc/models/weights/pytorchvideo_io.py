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

from . import names

# Our archs whose PyTorchVideo counterpart has a max-pool module after res2
# (``stage1_pool``: c2d_r50, i3d_r50), shifting later block indices by one.
STAGE1_POOL_ARCHS = ("c2d", "c2d_nl32", "i3d")
PYTORCHVIDEO_BUILDERS = {"slow": "slow_r50", "c2d": "c2d_r50", "i3d": "i3d_r50"}


def export_pytorchvideo(state: Mapping[str, torch.Tensor], *, arch: str) -> "OrderedDict[str, torch.Tensor]":
    """Our ``model.state_dict()`` (for MODEL.ARCH ``arch``) -> PyTorchVideo names."""
    stage1_pool = arch in STAGE1_POOL_ARCHS
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
