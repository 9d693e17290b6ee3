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
  rescaling; the sigmoid is SE's last transform step).

``GlobalContextBlock.preset`` builds the named instantiations: ``gc`` (Eq. 5),
``snl`` (Eq. 3), ``se`` (SE block) and the Table 2(f) ablations ``avg_add`` and
``att_mul`` ("att+scale").
"""

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from ..fast import is_channels_last_3d, no_autocast

_POOLINGS = ("att", "avg")
_TRANSFORMS = ("conv", "bottleneck")
_FUSIONS = ("add", "mul")

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
        fusion: ``add`` | ``mul``.
        zero_init_last: zero the last transform conv (weight and bias). None (the
            default) means "for add fusion": the add block then starts as the
            identity, while a mul block keeps PyTorch's default conv init (SE's
            own; a zero conv there would halve x through sigmoid(0) = 0.5).

    Parameters: ``att`` adds C + 1 (W_k); ``conv`` C^2 + C; ``bottleneck``
    2CP + C + P, plus 2P with LayerNorm. GC (Eq. 5) = 2CP + 2C + 3P + 1; SNL = C^2 + 2C + 1.
    W_k's bias is kept for these counts and for checkpoint compatibility, although
    the softmax's shift invariance gives it an exactly zero gradient.

    Probe: ``attention_probe`` sees alpha [N, 1, T*H*W] (att pooling only).
    """

    def __init__(
        self,
        dim: int,
        pooling: str = "att",
        transform: str = "bottleneck",
        ratio: float = 0.25,
        layer_norm: bool = True,
        fusion: str = "add",
        zero_init_last: Optional[bool] = None,
    ) -> None:
        super().__init__()
        _check("pooling", pooling, _POOLINGS)
        _check("transform", transform, _TRANSFORMS)
        _check("fusion", fusion, _FUSIONS)
        self.dim = dim
        self.pooling = pooling
        self.fusion = fusion
        self.zero_init_last = fusion == "add" if zero_init_last is None else zero_init_last

        if pooling == "att":
            self.conv_k = nn.Conv3d(dim, 1, kernel_size=1)
        # Present for every pooling so analysis tools find the block; fires for att only.
        self.attention_probe = nn.Identity()
        if transform == "conv":
            self.hidden = None
            layers = OrderedDict(conv_v=nn.Conv3d(dim, dim, kernel_size=1))
        else:
            self.hidden = max(1, int(round(dim * ratio)))
            layers = OrderedDict(conv_v1=nn.Conv3d(dim, self.hidden, kernel_size=1))
            if layer_norm:
                # One normalisation over the P channels of the [P, 1, 1, 1] context.
                layers["ln"] = nn.LayerNorm([self.hidden, 1, 1, 1])
            layers["relu"] = nn.ReLU(inplace=True)
            layers["conv_v2"] = nn.Conv3d(self.hidden, dim, kernel_size=1)
        self.transform = nn.Sequential(layers)
        self.reset_parameters()

    @classmethod
    def preset(cls, name: str, dim: int, ratio: Optional[float] = None) -> "GlobalContextBlock":
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
        )

    def reset_parameters(self) -> None:
        """W_k: Kaiming-normal (fan_in) with zero bias (GCNet's code); transform
        convs and LayerNorm: PyTorch defaults; the last transform conv zeroed
        when ``zero_init_last``."""
        if self.pooling == "att":
            nn.init.kaiming_normal_(self.conv_k.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_k.bias)
        for module in self.transform:
            if isinstance(module, (nn.Conv3d, nn.LayerNorm)):
                module.reset_parameters()
        if self.zero_init_last:
            last = self.transform[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

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
        return self._attend(logits, rows).view(n, c, 1, 1, 1)

    def _attend(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """sum_j alpha_j rows_j as [N, 1, K], alpha = softmax(logits [N, 1, THW]); rows [N, THW, K]."""
        alpha = self.attention_probe(torch.softmax(logits, dim=-1))
        # One [N, 1, THW] x [N, THW, K] matmul (counted by FLOP counters).
        return torch.bmm(alpha, rows)

    def position_key(self, weight: torch.Tensor):
        """W_k W [C_in] for a 1x1x1 conv's weight W [C, C_in] (att pooling; None for avg):
        the att logit of y = W h + b at a position is <W_k W, h> + a constant."""
        if self.pooling == "avg":
            return None
        return (self.conv_k.weight.detach().view(1, -1).to(weight.dtype) @ weight).view(-1)

    def fold_pointwise_conv(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, key):
        """Inference: this block on y = W h + b (a 1x1x1 conv; W [C, C_in] and b in the
        statistics' precision, float32 or wider) as the per-sample channel affine
        ``(scale, shift)``, read from h: (None, delta) for add fusion, (sigmoid(delta),
        None) for mul.

        Both poolings are linear in y: avg(y) = W avg(h) + b; the att logits are
        W_k y + b_k = <key, h> + a constant that the softmax drops (``key =
        position_key(W)``), and as alpha sums to 1, sum_j alpha_j y_j = W (sum_j
        alpha_j h_j) + b. So context modeling reads the conv's input h (C_in = C / 4
        channels in a bottleneck) instead of y, and the fusion becomes a bias / scale
        of the conv itself. Equal to ``self(y)`` up to float rounding; [N, C] results.
        """
        n, c_in = h.shape[:2]
        with no_autocast(h):
            rows = h.reshape(n, c_in, -1).transpose(1, 2)  # [N, THW, C_in], a view in either layout
            rows = rows if rows.dtype == weight.dtype else rows.to(weight.dtype)
            if key is None:
                pooled = rows.mean(dim=1)
            else:
                pooled = self._attend(torch.matmul(rows, key).unsqueeze(1), rows).squeeze(1)
            delta = self.transform(torch.addmm(bias, pooled, weight.t()).view(n, -1, 1, 1, 1)).view(n, -1)
        return (None, delta) if self.fusion == "add" else (torch.sigmoid(delta), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.transform(self.context(x))
        if self.fusion == "add":
            return x + delta
        return x * torch.sigmoid(delta)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, pooling={self.pooling}, hidden={self.hidden}, fusion={self.fusion}"

