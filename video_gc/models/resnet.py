"""Video ResNet-50/101 (He et al. "Deep Residual Learning"; temporal variants from
the SlowFast paper, Table 1, and the Non-local paper, Table 1), one implementation
driven by the per-arch tables in ``arch.py``.

Module names follow PySlowFast's state dicts less its ``pathway0_`` prefixes:
``stem.conv``, ``res3.1.branch2.a_bn``, ``res3.1.nonlocal.conv_theta``, ``head.projection``.
"""

from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from video_gc.registry import ARCHS, BLOCKS, DEPTHS

from ..config import ConfigError
from .arch import stage_num_frames, stage_temporal_kernels
from .blocks import block_spec
from .bottleneck import BRANCH_POSITIONS
from .bottleneck import BottleneckTransform, ResBlock
from .head import ResNetHead
from .stem import VideoStem

# Submodule names of blocks that initialise themselves; the backbone init skips them.
CONTEXT_MODULE_NAMES = ("context", "nonlocal", "cgd")


class VideoResNet(nn.Module):
    """stem -> res2 -> (temporal pool) -> res3 -> res4 -> res5 -> head.

    Args:
        stem: the stem module.
        stages: the four stages res2..res5 (each an nn.Sequential of ResBlocks).
        res2_pool: temporal pooling after res2 (nn.Identity for none).
        head: a ResNetHead.
    """

    def __init__(self, *, stem: nn.Module, stages: Sequence[nn.Module], res2_pool: nn.Module, head: ResNetHead) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"VideoResNet needs 4 stages (res2..res5), got {len(stages)}")
        self.stem = stem
        self.res2, self.res3, self.res4, self.res5 = stages
        self.res2_pool = res2_pool
        self.head = head

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res2_pool(self.res2(self.stem(x)))
        return self.res5(self.res4(self.res3(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, C] before dropout and fc."""
        return self.head.features(self._trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] for clips [N, 3, T, H, W]."""
        return self.head(self._trunk(x))


def init_weights(model: nn.Module, *, fc_init_std: float = 0.01, zero_init_final_bn: bool = True) -> None:
    """Backbone init (He et al. 2015 "c2_msra" and Goyal et al. 2017 zero-gamma).

    Convs: Kaiming-normal, fan_out. BN: gamma 1, beta 0, except each bottleneck's
    last BN (``branch2.c_bn``), whose gamma starts at 0 so every residual block
    starts as the identity. fc: N(0, fc_init_std), bias 0. Context blocks
    (``context``, ``nonlocal``, ``cgd``) initialise themselves and are not touched.
    """

    def visit(module: nn.Module, name: str) -> None:
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            final = zero_init_final_bn and name == "c_bn"
            nn.init.constant_(module.weight, 0.0 if final else 1.0)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=fc_init_std)
            nn.init.zeros_(module.bias)
        for child_name, child in module.named_children():
            if child_name not in CONTEXT_MODULE_NAMES:
                visit(child, child_name)

    visit(model, "")


def _build_stage(cfg, s: int, dim_in: int, num_frames: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """Stage res{s + 2}: its bottlenecks with the configured context / NL blocks."""
    spec = ARCHS[cfg.MODEL.ARCH]
    num_blocks = DEPTHS[cfg.RESNET.DEPTH][s]
    width = cfg.RESNET.WIDTH_PER_GROUP
    dim_out = width * 4 * 2**s
    dim_inner = cfg.RESNET.NUM_GROUPS * width * 2**s
    kernels = stage_temporal_kernels(spec.temporal_kernels[s], num_blocks, cfg.RESNET.NUM_BLOCK_TEMP_KERNEL[s][0])
    context = block_spec(cfg.CONTEXT)
    position = None
    if context is not None:
        position = context.default_position if cfg.CONTEXT.POSITION == "default" else cfg.CONTEXT.POSITION
    nl_indices = set(cfg.NONLOCAL.LOCATION[s][0])
    ctx_indices = set(cfg.CONTEXT.LOCATION[s]) if context is not None else set()
    # A block inside branch2 sees the inner width; one on the residual block, the output width.
    in_branch = position in BRANCH_POSITIONS
    blocks = []
    for i in range(num_blocks):
        stride = cfg.RESNET.SPATIAL_STRIDES[s][0] if i == 0 else 1
        block_in = dim_in if i == 0 else dim_out
        gate = context.build(cfg.CONTEXT, dim_inner, num_frames) if i in ctx_indices and in_branch else None
        block = context.build(cfg.CONTEXT, dim_out, num_frames) if i in ctx_indices and not in_branch else None
        nonlocal_block = None
        if i in nl_indices:
            nonlocal_block = BLOCKS["nonlocal"].build(
                dim_out, dim_out // 2, instantiation=cfg.NONLOCAL.INSTANTIATION, pool_size=cfg.NONLOCAL.POOL[s][0],
                zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN, bn_momentum=cfg.BN.MOMENTUM,
            )
        branch2 = BottleneckTransform(
            dim_in=block_in, dim_inner=dim_inner, dim_out=dim_out, temporal_kernel=kernels[i], stride=stride,
            num_groups=cfg.RESNET.NUM_GROUPS, stride_1x1=cfg.RESNET.STRIDE_1X1,
            dilation=cfg.RESNET.SPATIAL_DILATIONS[s][0], norm_module=norm, inplace_relu=cfg.RESNET.INPLACE_RELU,
            cgd=gate, cgd_position=position if gate is not None else "after_conv1",
        )
        blocks.append(ResBlock(
            branch2=branch2, dim_in=block_in, dim_out=dim_out, stride=stride, norm_module=norm,
            inplace_relu=cfg.RESNET.INPLACE_RELU, context=block,
            context_position=position if block is not None else "after1x1", nonlocal_block=nonlocal_block,
        ))
    return nn.Sequential(*blocks)


def build_resnet(cfg) -> VideoResNet:
    """The video ResNet described by a validated config (MODEL, RESNET, NONLOCAL, CONTEXT, BN, DATA)."""
    spec = ARCHS[cfg.MODEL.ARCH]
    norm: Callable[[int], nn.Module] = partial(nn.BatchNorm3d, eps=1e-5, momentum=cfg.BN.MOMENTUM)
    width = cfg.RESNET.WIDTH_PER_GROUP
    frames = stage_num_frames(cfg.MODEL.ARCH, cfg.DATA.NUM_FRAMES)
    if min(frames) < 1:
        raise ConfigError(
            f"config key DATA.NUM_FRAMES: invalid value {cfg.DATA.NUM_FRAMES!r} for MODEL.ARCH {cfg.MODEL.ARCH}; "
            f"allowed values: enough frames to keep T >= 1 in every stage (got {list(frames)})"
        )
    pool_k, pool_s, pool_p = spec.stem_pool
    stem = VideoStem(
        dim_in=cfg.DATA.INPUT_CHANNEL_NUM[0], dim_out=width, kernel_t=spec.stem_kernel_t,
        stride_t=spec.stem_stride_t, pool_kernel=pool_k, pool_stride=pool_s, pool_padding=pool_p,
        norm_module=norm, inplace_relu=cfg.RESNET.INPLACE_RELU,
    )
    stages, dim_in = [], width
    for s in range(4):
        stages.append(_build_stage(cfg, s, dim_in, frames[s], norm))
        dim_in = width * 4 * 2**s
    res2_pool: nn.Module = nn.Identity()
    if spec.res2_pool_t > 1:
        t = spec.res2_pool_t
        res2_pool = nn.MaxPool3d(kernel_size=(t, 1, 1), stride=(t, 1, 1))
    head = ResNetHead(dim_in=dim_in, num_classes=cfg.MODEL.NUM_CLASSES, dropout_rate=cfg.MODEL.DROPOUT_RATE)
    model = VideoResNet(stem=stem, stages=stages, res2_pool=res2_pool, head=head)
    init_weights(model, fc_init_std=cfg.MODEL.FC_INIT_STD, zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN)
    return model
