"""ResNet stem for video: conv1 (kt x 7 x 7) -> BN -> ReLU -> max-pool (He et al.
"Deep Residual Learning", Table 1, inflated in time as in the SlowFast paper)."""

from typing import Callable, Sequence

import torch
from torch import nn


class VideoStem(nn.Module):
    """conv -> bn -> relu -> pool on [N, C, T, H, W].

    Args:
        dim_in, dim_out: channels in and out of the 7x7 conv.
        kernel_t, stride_t: temporal kernel / stride of the conv (padding kernel_t // 2).
        pool_kernel, pool_stride, pool_padding: the max-pool, each (t, h, w).
        norm_module: BatchNorm factory taking the channel count.
    """

    def __init__(
        self,
        *,
        dim_in: int = 3,
        dim_out: int = 64,
        kernel_t: int = 1,
        stride_t: int = 1,
        pool_kernel: Sequence[int] = (1, 3, 3),
        pool_stride: Sequence[int] = (1, 2, 2),
        pool_padding: Sequence[int] = (0, 1, 1),
        norm_module: Callable[[int], nn.Module] = nn.BatchNorm3d,
        inplace_relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            dim_in, dim_out, kernel_size=(kernel_t, 7, 7), stride=(stride_t, 2, 2),
            padding=(kernel_t // 2, 3, 3), bias=False,
        )
        self.bn = norm_module(dim_out)
        self.relu = nn.ReLU(inplace=inplace_relu)
        self.pool = nn.MaxPool3d(kernel_size=tuple(pool_kernel), stride=tuple(pool_stride), padding=tuple(pool_padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))
