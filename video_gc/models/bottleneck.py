"""Bottleneck residual block for video (He et al. "Deep Residual Learning", Fig. 5
right; temporal kernel on the first 1x1 conv as in the SlowFast paper, Table 1).

Context blocks plug in at the places their papers use:

- CGD (He et al., CGD paper Sec. 4.1 / Table 4): inside ``branch2`` right after
  conv a (before its BN, as the official code) or after conv b.
- GCNet family / NA (GCNet Sec. 4.2 "Positions"): ``after1x1`` = after the last
  1x1 conv and its BN, before the residual add; ``afterAdd`` = on the block's
  output (after add and ReLU), where the NL block also goes.
- NL (Non-local paper Sec. 4): after the residual add and ReLU.
"""

from typing import Callable, Optional

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]

# Where a context block can sit: inside branch2 (at its inner width) or on the residual block.
BRANCH_POSITIONS = ("after_conv1", "after_conv2")
RESIDUAL_POSITIONS = ("after1x1", "afterAdd")


class BottleneckTransform(nn.Module):
    """Residual branch ``branch2``: a (kt x 1 x 1) -> b (1 x 3 x 3) -> c (1 x 1 x 1).

    Args:
        dim_in, dim_inner, dim_out: channel widths.
        temporal_kernel: temporal kernel of conv a (padded by kernel // 2).
        stride: spatial stride, on conv b (or on conv a when ``stride_1x1``).
        num_groups: groups of conv b (ResNeXt).
        dilation: spatial dilation of conv b.
        cgd: optional Compact Global Descriptor, applied at ``cgd_position``
            ("after_conv1": after conv a, before a_bn; "after_conv2": after conv b, before b_bn).
    """

    def __init__(
        self,
        *,
        dim_in: int,
        dim_inner: int,
        dim_out: int,
        temporal_kernel: int = 1,
        stride: int = 1,
        num_groups: int = 1,
        stride_1x1: bool = False,
        dilation: int = 1,
        norm_module: NormFactory = nn.BatchNorm3d,
        inplace_relu: bool = True,
        cgd: Optional[nn.Module] = None,
        cgd_position: str = "after_conv1",
    ) -> None:
        super().__init__()
        stride_a, stride_b = (stride, 1) if stride_1x1 else (1, stride)
        self.a = nn.Conv3d(
            dim_in, dim_inner, kernel_size=(temporal_kernel, 1, 1), stride=(1, stride_a, stride_a),
            padding=(temporal_kernel // 2, 0, 0), bias=False,
        )
        self.a_bn = norm_module(dim_inner)
        self.a_relu = nn.ReLU(inplace=inplace_relu)
        self.b = nn.Conv3d(
            dim_inner, dim_inner, kernel_size=(1, 3, 3), stride=(1, stride_b, stride_b),
            padding=(0, dilation, dilation), dilation=(1, dilation, dilation), groups=num_groups, bias=False,
        )
        self.b_bn = norm_module(dim_inner)
        self.b_relu = nn.ReLU(inplace=inplace_relu)
        self.c = nn.Conv3d(dim_inner, dim_out, kernel_size=1, bias=False)
        self.c_bn = norm_module(dim_out)
        if cgd is not None:
            if cgd_position not in BRANCH_POSITIONS:
                raise ValueError(f"cgd_position: invalid value {cgd_position!r}; allowed values: {', '.join(BRANCH_POSITIONS)}")
            self.cgd = cgd
        self.cgd_position = cgd_position if cgd is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        if self.cgd_position == "after_conv1":
            x = self.cgd(x)
        x = self.b(self.a_relu(self.a_bn(x)))
        if self.cgd_position == "after_conv2":
            x = self.cgd(x)
        x = self.c(self.b_relu(self.b_bn(x)))
        return self.c_bn(x)


class ResBlock(nn.Module):
    """out = ReLU(shortcut(x) + branch2(x)), with optional context / NL blocks.

    Args:
        branch2: the residual branch (a BottleneckTransform).
        dim_in, dim_out, stride: decide the projection shortcut ``branch1`` (1x1x1
            conv + BN), built when the width or the spatial size changes.
        context: optional GCNet-family / NA block at ``context_position``
            ("after1x1" before the add, or "afterAdd" on the block output).
        nonlocal_block: optional NL block on the block output (registered as ``nonlocal``).
    """

    def __init__(
        self,
        *,
        branch2: nn.Module,
        dim_in: int,
        dim_out: int,
        stride: int = 1,
        norm_module: NormFactory = nn.BatchNorm3d,
        inplace_relu: bool = True,
        context: Optional[nn.Module] = None,
        context_position: str = "after1x1",
        nonlocal_block: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, kernel_size=1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = norm_module(dim_out)
        self.branch2 = branch2
        self.relu = nn.ReLU(inplace=inplace_relu)
        if context is not None:
            if context_position not in RESIDUAL_POSITIONS:
                raise ValueError(
                    f"context_position: invalid value {context_position!r}; allowed values: {', '.join(RESIDUAL_POSITIONS)}")
            self.context = context
        self.context_position = context_position if context is not None else None
        if nonlocal_block is not None:
            # "nonlocal" is a Python keyword, hence add_module; the name matches PySlowFast's checkpoints.
            self.add_module("nonlocal", nonlocal_block)
        self.has_nonlocal = nonlocal_block is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.branch2(x)
        if self.context_position == "after1x1":
            residual = self.context(residual)
        shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        out = self.relu(shortcut + residual)
        if self.context_position == "afterAdd":
            out = self.context(out)
        if self.has_nonlocal:
            out = getattr(self, "nonlocal")(out)
        return out
