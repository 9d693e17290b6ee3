"""Context blocks for video ResNets, one per file, and their config builders.

Every block maps [N, C, T, H, W] to the same shape and initialises itself.
"""

from typing import Optional

from torch import nn

from .cgd import CompactGlobalDescriptor
from .global_context import PRESETS, GlobalContextBlock
from .non_local import NonLocalBlock
from .normalization_attention import NormalizationAttention

__all__ = [
    "CompactGlobalDescriptor",
    "GlobalContextBlock",
    "NonLocalBlock",
    "NormalizationAttention",
    "build_context_block",
]


def build_context_block(context_cfg, dim: int, num_frames: int) -> Optional[nn.Module]:
    """The CONTEXT.TYPE block for ``dim`` channels at a stage with ``num_frames`` frames.

    ``context_cfg`` is the config's CONTEXT section. TYPE ``none`` gives None.
    ``gc``, ``avg_add`` and ``att_mul`` take their bottleneck ratio from
    CONTEXT.GC.RATIO; ``snl`` has no bottleneck; ``se`` always uses the SE
    paper's r = 16 (CONTEXT.GC.RATIO defaults to GCNet's video 1/4, which
    is not SE's); for an SE block with another ratio use TYPE ``custom`` with
    POOLING avg, TRANSFORM bottleneck, LAYER_NORM False, FUSION mul.
    ``custom`` builds the block from all of CONTEXT.GC.
    """
    kind = context_cfg.TYPE
    gc = context_cfg.GC
    if kind == "none":
        return None
    if kind == "custom":
        return GlobalContextBlock(
            dim,
            pooling=gc.POOLING,
            transform=gc.TRANSFORM,
            ratio=gc.RATIO,
            layer_norm=gc.LAYER_NORM,
            fusion=gc.FUSION,
        )
    if kind in PRESETS:
        return GlobalContextBlock.preset(kind, dim, ratio=None if kind == "se" else gc.RATIO)
    if kind == "cgd":
        cgd = context_cfg.CGD
        return CompactGlobalDescriptor(
            dim,
            num_frames=num_frames,
            variant=cgd.VARIANT,
            share_temporal=cgd.SHARE_TEMPORAL,
            zero_init=cgd.ZERO_INIT,
        )
    if kind == "na":
        return NormalizationAttention(dim, eps=context_cfg.NA.EPS)
    allowed = ", ".join(("none", "custom") + tuple(PRESETS) + ("cgd", "na"))
    raise ValueError(f"config key CONTEXT.TYPE: invalid value {kind!r}; allowed values: {allowed}")

