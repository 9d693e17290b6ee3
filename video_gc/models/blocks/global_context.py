"""GCNet's global context modeling framework (Cao et al., "GCNet: Non-local
Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW 2019, Sec. 4).

Eq. 4:  z_i = F(x_i, delta(sum_j alpha_j x_j))

with three interchangeable steps, each a constructor argument:

- context modeling ``pooling``: ``att`` (alpha = softmax over all T*H*W positions of
  W_k x, W_k a 1x1x1 conv C -> 1 with bias) or ``avg`` (alpha_j = 1 / N_p, SE's squeeze);
- transform ``transform`` (delta): ``conv`` (one C x C 1x1x1 conv W_v with bias, the
  simplified NL block, Eq. 3) or ``bottleneck`` (W_v1: C -> P, optional LayerNorm
  over P, ReLU, W_v2: P -> C, with P = round(C * ratio); Eq. 5);
- fusion ``fusion`` (F): ``add`` (x + delta) or ``mul`` (x * sigmoid(delta), SE's
  rescaling; the sigmoid is SE's last transform step), or both, as GCNet's
  released code allows: each fusion then has its own transform, and the block
  multiplies first, then adds: z = x * sigmoid(delta_mul) + delta_add.

``GlobalContextBlock.preset`` builds the named instantiations: ``gc`` (Eq. 5),
``snl``, ``se`` (SE block) and the Table 2(f) ablations ``avg_add`` and
``att_mul`` ("att+scale").

SNL is the simplified non-local block. Eq. 2 writes it with W_v inside the sum,

    z_i = x_i + sum_j alpha_j (W_v x_j),   alpha_j = exp(W_k x_j) / sum_m exp(W_k x_m),

and as alpha sums to 1 this equals Eq. 3, z_i = x_i + W_v sum_j alpha_j x_j: the
weights pool x first and W_v runs once per clip, not at every position. That is
``snl`` here: att pooling, a single C x C ``conv`` transform, add fusion.
"""

from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..layout import is_channels_last_3d

POOLINGS = ("att", "avg")
TRANSFORMS = ("conv", "bottleneck")
FUSIONS = ("add", "mul")
# Which fusion branches start with their last conv zeroed: add only (an add block starts as
# the identity; a zeroed mul branch would halve x through sigmoid(0) = 0.5), every branch
# (GCNet's released code), or none.
ZERO_INITS = ("add", "all", "none")

# name -> (pooling, transform, layer_norm, fusion, default ratio or None when the
# transform has no bottleneck). SE uses its own paper's r = 16 and no LayerNorm;
# the Table 2(f) ablations keep the GC block's bottleneck with LayerNorm.
PRESETS = {
    "gc": ("att", "bottleneck", True, "add", 0.25),
    "snl": ("att", "conv", False, "add", None),
    "se": ("avg", "bottleneck", False, "mul", 1.0 / 16),
    "avg_add": ("avg", "bottleneck", True, "add", 0.25),
    "att_mul": ("att", "bottleneck", True, "mul", 0.25),
}


def _check(name: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"GlobalContextBlock: unknown {name} {value!r}; allowed values: {', '.join(allowed)}")


class GlobalContextBlock(nn.Module):
    """GCNet framework block (Eq. 4) on [N, C, T, H, W] features.

    Args:
        dim: channels C.
        pooling: ``att`` | ``avg`` (context modeling).
        transform: ``bottleneck`` | ``conv``.
        ratio: bottleneck width P = round(C * ratio) (ignored by ``conv``).
        layer_norm: LayerNorm (with affine) over the P bottleneck channels, before ReLU.
        fusion: ``add`` | ``mul``, or a list of them; with both, each has its own
            transform (``transform_mul``, ``transform_add``) and mul is applied first.
        zero_init: which fusion branches start with their last conv zeroed (weight
            and bias): ``add`` (default: an add block starts as the identity, a mul
            block keeps PyTorch's default conv init, SE's own), ``all`` (GCNet's
            released code; a mul branch then starts at x * 0.5) or ``none``.

    Parameters: ``att`` adds C + 1 (W_k); ``conv`` C^2 + C; ``bottleneck``
    2CP + C + P, plus 2P with LayerNorm, per fusion branch. GC (Eq. 5) = 2CP + 2C + 3P + 1;
    SNL = C^2 + 2C + 1.
    W_k's bias is kept for these counts and for checkpoint compatibility, although
    the softmax's shift invariance gives it an exactly zero gradient.

    Probe: ``attention_probe`` sees alpha [N, 1, T*H*W] (att pooling only).
    """

    is_context_block = True  # kept whole (one opaque call) by the inference rewrite

    def __init__(
        self,
        dim: int,
        pooling: str = "att",
        transform: str = "bottleneck",
        ratio: float = 0.25,
        layer_norm: bool = True,
        fusion: Union[str, Sequence[str]] = "add",
        zero_init: str = "add",
    ) -> None:
        super().__init__()
        _check("pooling", pooling, POOLINGS)
        _check("transform", transform, TRANSFORMS)
        _check("zero_init", zero_init, ZERO_INITS)
        fusions = (fusion,) if isinstance(fusion, str) else tuple(fusion)
        for name in fusions:
            _check("fusion", name, FUSIONS)
        if not fusions or len(set(fusions)) != len(fusions):
            raise ValueError(f"GlobalContextBlock: fusion needs add, mul or both, once each; got {fusion!r}")
        self.dim = dim
        self.pooling = pooling
        # Application order: multiply first, then add (GCNet's released code).
        self.fusions = tuple(f for f in ("mul", "add") if f in fusions)
        self.zero_init = zero_init

        if pooling == "att":
            self.conv_k = nn.Conv3d(dim, 1, kernel_size=1)
        # Present for every pooling so analysis tools find the block; fires for att only.
        self.attention_probe = nn.Identity()
        self.hidden = None if transform == "conv" else max(1, int(round(dim * ratio)))
        if len(self.fusions) == 1:
            self.transform = self._transform(dim, layer_norm)
        else:
            self.transform_mul = self._transform(dim, layer_norm)
            self.transform_add = self._transform(dim, layer_norm)
        self.reset_parameters()

    def _transform(self, dim: int, layer_norm: bool) -> nn.Sequential:
        """delta: one C x C conv (``conv``) or C -> P [-> LayerNorm] -> ReLU -> C (``bottleneck``)."""
        if self.hidden is None:
            return nn.Sequential(OrderedDict(conv_v=nn.Conv3d(dim, dim, kernel_size=1)))
        layers = OrderedDict(conv_v1=nn.Conv3d(dim, self.hidden, kernel_size=1))
        if layer_norm:
            # One normalisation over the P channels of the [P, 1, 1, 1] context.
            layers["ln"] = nn.LayerNorm([self.hidden, 1, 1, 1])
        layers["relu"] = nn.ReLU(inplace=True)
        layers["conv_v2"] = nn.Conv3d(self.hidden, dim, kernel_size=1)
        return nn.Sequential(layers)

    @property
    def fusion(self) -> str:
        """The fusion steps in application order: ``add``, ``mul`` or ``mul+add``."""
        return "+".join(self.fusions)

    def branches(self) -> tuple:
        """(fusion, transform) pairs in application order."""
        if len(self.fusions) == 1:
            return ((self.fusions[0], self.transform),)
        return (("mul", self.transform_mul), ("add", self.transform_add))

    @classmethod
    def preset(cls, name: str, dim: int, ratio: Optional[float] = None, zero_init: str = "add") -> "GlobalContextBlock":
        """A named instantiation (see ``PRESETS``); ``ratio`` overrides the
        preset's bottleneck ratio (SNL has no bottleneck and ignores it)."""
        _check("preset", name, tuple(PRESETS))
        pooling, transform, layer_norm, fusion, default_ratio = PRESETS[name]
        ratio = default_ratio if ratio is None or default_ratio is None else ratio
        return cls(
            dim,
            pooling=pooling,
            transform=transform,
            ratio=ratio if ratio is not None else 1.0,
            layer_norm=layer_norm,
            fusion=fusion,
            zero_init=zero_init,
        )

    def reset_parameters(self) -> None:
        """W_k: Kaiming-normal (fan_in) with zero bias (GCNet's code); transform
        convs and LayerNorm: PyTorch defaults; the last conv of the branches that
        ``zero_init`` names zeroed."""
        if self.pooling == "att":
            nn.init.kaiming_normal_(self.conv_k.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_k.bias)
        for fusion, transform in self.branches():
            for module in transform:
                if isinstance(module, (nn.Conv3d, nn.LayerNorm)):
                    module.reset_parameters()
            if self.zero_init == "all" or self.zero_init == fusion:
                nn.init.zeros_(transform[-1].weight)
                nn.init.zeros_(transform[-1].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Context modeling: sum_j alpha_j x_j as [N, C, 1, 1, 1]."""
        n, c = x.shape[:2]
        if self.pooling == "avg":
            return x.mean(dim=(2, 3, 4), keepdim=True)
        rows = x.reshape(n, c, -1).transpose(1, 2)  # [N, THW, C], a view in either memory format
        if is_channels_last_3d(x):
            # W_k as a [THW, C] x [C, 1] matmul: the same numbers, but oneDNN runs a conv with
            # one output channel on channels_last input ~10x slower than its FLOPs suggest.
            logits = torch.matmul(rows, self.conv_k.weight.view(c, 1)).transpose(1, 2) + self.conv_k.bias
        else:
            logits = self.conv_k(x).view(n, 1, -1)
        return self.attention_pool(logits, rows).view(n, c, 1, 1, 1)

    def attention_pool(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """sum_j alpha_j rows_j as [N, 1, K], alpha = softmax(logits [N, 1, THW]); rows [N, THW, K]."""
        alpha = self.attention_probe(torch.softmax(logits, dim=-1))
        # One [N, 1, THW] x [N, THW, K] matmul (counted by FLOP counters).
        return torch.bmm(alpha, rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.context(x)
        for fusion, transform in self.branches():
            delta = transform(context)
            x = x * torch.sigmoid(delta) if fusion == "mul" else x + delta
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, pooling={self.pooling}, hidden={self.hidden}, fusion={self.fusion}"


def build_preset(name: str, context_cfg, dim: int, num_frames: int) -> GlobalContextBlock:
    """The ``name`` preset; ``gc``, ``avg_add`` and ``att_mul`` take CONTEXT.GC.RATIO. ``se``
    keeps the SE paper's r = 16 (CONTEXT.GC.RATIO defaults to GCNet's video 1/4, not SE's);
    an SE block of another ratio is TYPE ``custom`` with avg / bottleneck / no LayerNorm / mul."""
    return GlobalContextBlock.preset(name, dim, ratio=None if name == "se" else context_cfg.GC.RATIO,
                                     zero_init=context_cfg.GC.ZERO_INIT)


def build_custom(context_cfg, dim: int, num_frames: int) -> GlobalContextBlock:
    """A block with every step from CONTEXT.GC."""
    gc = context_cfg.GC
    return GlobalContextBlock(dim, pooling=gc.POOLING, transform=gc.TRANSFORM, ratio=gc.RATIO,
                              layer_norm=gc.LAYER_NORM, fusion=gc.FUSION, zero_init=gc.ZERO_INIT)
