"""Context blocks for video ResNets, one per file, each registered once in ``BLOCKS``.

Every block maps [N, C, T, H, W] to the same shape and initialises itself. A new
block is one file (the module and a ``build(context_cfg, dim, num_frames)``) plus
one ``BLOCKS.register`` line below; CONTEXT.TYPE then accepts its name, and
CONTEXT.LOCATION / CONTEXT.POSITION place it.
"""

from functools import partial
from typing import Optional

from torch import nn

from video_gc.registry import BLOCKS, BlockSpec

from ..bottleneck import BRANCH_POSITIONS
from . import cgd, global_context, non_local, normalization_attention
from .cgd import CompactGlobalDescriptor
from .global_context import PRESETS, GlobalContextBlock
from .non_local import NonLocalBlock
from .normalization_attention import NormalizationAttention

__all__ = [
    "BLOCKS",
    "BlockSpec",
    "CompactGlobalDescriptor",
    "GlobalContextBlock",
    "NonLocalBlock",
    "NormalizationAttention",
    "block_spec",
    "build_context_block",
]

_GC_CHOICES = {"CONTEXT.GC.POOLING": global_context.POOLINGS, "CONTEXT.GC.TRANSFORM": global_context.TRANSFORMS,
               "CONTEXT.GC.FUSION": global_context.FUSIONS, "CONTEXT.GC.ZERO_INIT": global_context.ZERO_INITS}

BLOCKS.register("custom", BlockSpec(build=global_context.build_custom, module=GlobalContextBlock, choices=_GC_CHOICES))
for _name in PRESETS:
    BLOCKS.register(_name, BlockSpec(build=partial(global_context.build_preset, _name), module=GlobalContextBlock,
                                     choices=_GC_CHOICES))
BLOCKS.register("cgd", BlockSpec(build=cgd.build, module=CompactGlobalDescriptor, positions=BRANCH_POSITIONS,
                                 default_position="after_conv1", decay_group="cgd",
                                 choices={"CONTEXT.CGD.VARIANT": cgd.VARIANTS}))
BLOCKS.register("na", BlockSpec(build=normalization_attention.build, module=NormalizationAttention,
                                positions=("after1x1",),
                                choices={"CONTEXT.NA.STD_FORM": normalization_attention.STD_FORMS}))
# Placed by NONLOCAL.LOCATION after the residual block, with the NONLOCAL section's settings.
BLOCKS.register("nonlocal", BlockSpec(build=NonLocalBlock, module=NonLocalBlock, positions=("afterAdd",),
                                      default_position="afterAdd", selectable=False,
                                      choices={"NONLOCAL.INSTANTIATION": non_local.INSTANTIATIONS}))


def block_spec(context_cfg) -> Optional[BlockSpec]:
    """The registered spec of CONTEXT.TYPE (None for ``none``)."""
    if context_cfg.TYPE == "none":
        return None
    selectable = [name for name, spec in BLOCKS.items() if spec.selectable]
    if context_cfg.TYPE not in selectable:
        raise ValueError(f"config key CONTEXT.TYPE: invalid value {context_cfg.TYPE!r}; allowed values: "
                         f"{', '.join(['none'] + selectable)}")
    return BLOCKS[context_cfg.TYPE]


def build_context_block(context_cfg, dim: int, num_frames: int) -> Optional[nn.Module]:
    """The CONTEXT.TYPE block for ``dim`` channels at a stage with ``num_frames`` frames (None for ``none``)."""
    spec = block_spec(context_cfg)
    return None if spec is None else spec.build(context_cfg, dim, num_frames)
