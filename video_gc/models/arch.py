"""Per-arch tables of the video ResNet (PySlowFast's layout, Feichtenhofer et al.
"SlowFast Networks", Table 1; Wang et al. "Non-local Neural Networks", Table 1).

An arch only fixes the temporal side of the network: the stem's temporal kernel
and stride, the stem max-pool, the temporal kernels of the bottlenecks' first
conv per stage, and the temporal max-pool after res2. Everything spatial is the
ImageNet ResNet.
"""

from dataclasses import dataclass
from typing import Sequence, Tuple

from video_gc.registry import ARCHS, DEPTHS

Triple = Tuple[int, int, int]


@dataclass(frozen=True)
class ArchSpec:
    """Temporal layout of one arch.

    Attributes:
        stem_kernel_t: temporal kernel of conv1 (padded by kernel // 2).
        stem_stride_t: temporal stride of conv1.
        stem_pool: (kernel, stride, padding) of the stem max-pool, each (t, h, w).
        temporal_kernels: per stage res2..res5, the temporal kernels of conv a,
            cycled over the stage's first RESNET.NUM_BLOCK_TEMP_KERNEL blocks.
        res2_pool_t: temporal max-pool (kernel = stride) after res2; 1 = none.
    """

    stem_kernel_t: int
    stem_stride_t: int
    stem_pool: Tuple[Triple, Triple, Triple]
    temporal_kernels: Tuple[Sequence[int], Sequence[int], Sequence[int], Sequence[int]]
    res2_pool_t: int


_IMAGENET_POOL = ((1, 3, 3), (1, 2, 2), (0, 1, 1))

# Slow-only 8x8: temporal convs only in res4 and res5.
_SLOW = ARCHS.register("slow", ArchSpec(1, 1, _IMAGENET_POOL, ((1,), (1,), (3,), (3,)), 1))
# C2D 8x8 (PySlowFast): 2D convs, one temporal pool after res2 (T 8 -> 4).
ARCHS.register("c2d", ArchSpec(1, 1, _IMAGENET_POOL, ((1,), (1,), (1,), (1,)), 2))
ARCHS.register("c2d_nopool", ArchSpec(1, 1, _IMAGENET_POOL, ((1,), (1,), (1,), (1,)), 1))
# Non-local paper's 32-frame C2D: conv1 and pool1 halve T, then the res2 pool (32 -> 16 -> 8 -> 4).
ARCHS.register("c2d_nl32", ArchSpec(1, 2, ((2, 3, 3), (2, 2, 2), (0, 1, 1)), ((1,), (1,), (1,), (1,)), 2))
# I3D (PySlowFast's table): 5x7x7 conv1, alternating 3x1x1 / 1x1x1 conv a.
ARCHS.register("i3d", ArchSpec(5, 1, _IMAGENET_POOL, ((3,), (3, 1), (3, 1), (1, 3)), 2))
# Older PySlowFast YAMLs (SLOWONLY_*) call the Slow-only network "slowonly".
ARCHS.register("slowonly", _SLOW)

# RESNET.DEPTH -> bottleneck blocks per stage res2..res5.
DEPTHS.register(50, (3, 4, 6, 3))
DEPTHS.register(101, (3, 4, 23, 3))


def stage_temporal_kernels(spec_kernels: Sequence[int], num_blocks: int, num_temp_blocks: int) -> list:
    """Temporal kernel of conv a for each block of a stage.

    As in PySlowFast: the arch's kernel list is cycled over the first
    ``num_temp_blocks`` blocks; the remaining blocks use 1.
    """
    cycled = [spec_kernels[i % len(spec_kernels)] for i in range(num_blocks)]
    keep = min(num_temp_blocks, num_blocks)
    return cycled[:keep] + [1] * (num_blocks - keep)


def _out_len(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def stage_num_frames(arch: str, num_frames: int) -> Tuple[int, int, int, int]:
    """Temporal size of the features inside res2..res5 for a clip of ``num_frames``
    (below 1 when the clip is too short for the arch's temporal strides)."""
    spec = ARCHS[arch]
    t = _out_len(num_frames, spec.stem_kernel_t, spec.stem_stride_t, spec.stem_kernel_t // 2)
    (pk, ps, pp) = spec.stem_pool
    t = _out_len(t, pk[0], ps[0], pp[0])
    later = _out_len(t, spec.res2_pool_t, spec.res2_pool_t, 0)
    return (t, later, later, later)
