"""Compact Global Descriptor (He et al., "Compact Global Descriptor for Neural
Networks", arXiv 1907.09665).

Eq. 11:  X_hat = X (1 + tanh(z)),   Eq. 10:  z = g(X) f(X)^T w,

so z_n = g_n * <f, w>: the scalar s = f^T w scales the vector g (the paper's
"scal" remark after Eq. 11). g and f are global poolings over the spatial
positions (Table 2): ``avg``, ``max``, ``softmax(avg)``, ``softmax(max)``, the
softmax taken over the descriptor's channels. Each descriptor also has a bias b
in R^C, as the official code does: D(g, f) = tanh(g <f, w> + b).

Table 2 variants (g, f):
  v1 (avg, avg)           v2 (avg, softmax(avg))   v3 (softmax(avg), avg)
  v4 (avg, max)           v5 (max, avg)            v6 (softmax(avg), max)
  v7 (softmax(max), avg)
  cascades, where the outputs of two descriptors become g and f of a third:
  v8 (v3, v7)             v9 (v1, v7)              v10 (v3, v6)

v10, the official code's layer (with s = softmax_C(avg(X))):
  a = tanh(<avg(X), w0> s + b0)      (v3)
  m = tanh(<max(X), w1> s + b1)      (v6)
  z = tanh(<m, w2> a + b2),   X_hat = X (1 + z).

Video, Eq. 12 (``share_temporal=True``): z = sum_t g(X_t) f(X_t)^T w with one w
for all frames; every descriptor is computed per frame (a cascade's inner
descriptors too) and the outer one sums over t before its bias and tanh, so
the gate is one vector per clip, [N, C, 1, 1, 1], and T = 1 is exactly the
image layer. ``share_temporal=False`` is Fig. 4(a) literally: the frames are
concatenated along channels (t-major, X in R^(WH x CT)), w in R^(CT), the
softmax runs over all C*T entries, and the gate is [N, C, T, 1, 1].

Parameters: K = C (shared) or C*T (unshared) per w and per b, so 2K for v1-v7
and 6K for the cascades v8-v10 (6C = 3,072 for v10 at C = 512, whatever T).

The official code's explicit form has two switches, kept here: ``nonlinear``
(the tanh of every descriptor; off, D(g, f) = g <f, w> + b and X_hat = X (1 + z)
with that linear z) and ``bias`` (the b vectors; off, half the parameters).
"""

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..layout import is_channels_last_3d

# Table 2: (g, f) as poolings, and for the cascades as the descriptors whose outputs are g and f.
_SIMPLE: Dict[str, Tuple[str, str]] = {
    "v1": ("avg", "avg"),
    "v2": ("avg", "softmax_avg"),
    "v3": ("softmax_avg", "avg"),
    "v4": ("avg", "max"),
    "v5": ("max", "avg"),
    "v6": ("softmax_avg", "max"),
    "v7": ("softmax_max", "avg"),
}
_CASCADES: Dict[str, Tuple[str, str]] = {"v8": ("v3", "v7"), "v9": ("v1", "v7"), "v10": ("v3", "v6")}
VARIANTS = tuple(_SIMPLE) + tuple(_CASCADES)
_REDUCE = {"avg": torch.mean, "max": torch.amax}


def _pool(bases: Dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """One of Table 2's poolings from the [N, F, K] spatial avg / max; the softmax
    forms normalise over the K channels."""
    if kind.startswith("softmax_"):
        return torch.softmax(bases[kind[len("softmax_") :]], dim=-1)
    return bases[kind]


def _descriptor(g: torch.Tensor, f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """g f^T w = g * <f, w> for [N, F, K] descriptors (per frame)."""
    return g * torch.matmul(f, w).unsqueeze(-1)


class CompactGlobalDescriptor(nn.Module):
    """CGD gate X (1 + tanh(z)) on [N, C, T, H, W] features (Eq. 11, 12).

    Args:
        dim: channels C.
        num_frames: T, needed by the unshared form (weights per frame).
        variant: ``v1`` ... ``v10`` (Table 2); ``v10`` is the paper's best and
            the official code's.
        share_temporal: Eq. 12 weight sharing over frames (parameters
            independent of T); False: per-frame weights in R^(C*T).
        zero_init: start as the identity (remark after Eq. 11) by zeroing the
            weight and bias of the descriptor that produces z. A cascade's inner
            descriptors keep Xavier weights: with them at zero too, a and m stay
            0 and no gradient reaches w0, w1, w2 (only b2 would learn). False
            (default) follows the official code: Xavier-uniform w, zero b.
        nonlinear: tanh on every descriptor (default); False drops it.
        bias: a bias b per descriptor (default); False drops them.

    Probe: ``gate_probe`` sees 1 + tanh(z), [N, C, 1, 1, 1] shared or
    [N, C, T, 1, 1] unshared.
    """

    is_context_block = True  # kept whole (one opaque call) by the inference rewrite

    def __init__(
        self,
        dim: int,
        num_frames: int = 1,
        variant: str = "v10",
        share_temporal: bool = True,
        zero_init: bool = False,
        nonlinear: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            allowed = ", ".join(VARIANTS)
            raise ValueError(f"CompactGlobalDescriptor: unknown variant {variant!r}; allowed values: {allowed}")
        if not share_temporal and num_frames < 1:
            raise ValueError(
                f"CompactGlobalDescriptor: num_frames must be >= 1 for the unshared form, got {num_frames}"
            )
        self.dim = dim
        self.num_frames = num_frames
        self.variant = variant
        self.share_temporal = share_temporal
        self.zero_init = zero_init
        self.nonlinear = nonlinear
        self.has_bias = bias
        size = dim if share_temporal else dim * num_frames
        names = ("w0", "b0", "w1", "b1", "w2", "b2") if variant in _CASCADES else ("w", "b")
        for name in names:
            keep = bias or name.startswith("w")
            self.register_parameter(name, nn.Parameter(torch.empty(size)) if keep else None)
        # The spatial poolings (avg / max) this variant reads; the others are not computed.
        kinds = [kind for v in _CASCADES.get(variant, (variant,)) for kind in _SIMPLE[v]]
        self._bases = tuple(base for base in _REDUCE if any(kind.endswith(base) for kind in kinds))
        self.gate_probe = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform w (a 1 x K map: bound sqrt(6 / (K + 1))), zero b;
        with ``zero_init`` the outer descriptor's w and b are zero."""
        outer = "w2" if self.variant in _CASCADES else "w"
        for name, param in self.named_parameters(recurse=False):
            if name.startswith("b") or (self.zero_init and name == outer):
                nn.init.zeros_(param)
            else:
                nn.init.xavier_uniform_(param.view(1, -1))

    def _simple(self, bases: Dict[str, torch.Tensor], variant: str, w: torch.Tensor, b: Optional[torch.Tensor],
                outer: bool):
        g_kind, f_kind = _SIMPLE[variant]
        pre = _descriptor(_pool(bases, g_kind), _pool(bases, f_kind), w)
        return self._finish(pre, b, outer)

    def _finish(self, pre: torch.Tensor, b: Optional[torch.Tensor], outer: bool) -> torch.Tensor:
        # The outer descriptor sums over frames (Eq. 12) before its bias.
        if outer:
            pre = pre.sum(dim=1, keepdim=True)
        if b is not None:
            pre = pre + b
        return torch.tanh(pre) if self.nonlinear else pre

    def _tanh_z(self, bases: Dict[str, torch.Tensor]) -> torch.Tensor:
        """tanh(z) as [N, 1, K] from the [N, F, K] poolings."""
        if self.variant in _SIMPLE:
            return self._simple(bases, self.variant, self.w, self.b, outer=True)
        g_variant, f_variant = _CASCADES[self.variant]
        g = self._simple(bases, g_variant, self.w0, self.b0, outer=False)
        f = self._simple(bases, f_variant, self.w1, self.b1, outer=False)
        return self._finish(_descriptor(g, f, self.w2), self.b2, outer=True)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate 1 + tanh(z) of Eq. 11: [N, C, 1, 1, 1] shared, [N, C, T, 1, 1] unshared."""
        n, c, t = x.shape[:3]
        if c != self.dim:
            raise ValueError(f"CompactGlobalDescriptor: expected {self.dim} channels, got {c}")
        if not self.share_temporal and t != self.num_frames:
            raise ValueError(
                f"CompactGlobalDescriptor (share_temporal=False): built for num_frames={self.num_frames}, "
                f"got an input with T={t}"
            )
        # Spatial poolings per frame, [N, C, T] -> [N, T, C] (shared: F = T frames of K = C)
        # or [N, 1, T*C] (unshared: one descriptor over the t-major frame concatenation).
        shape = (n, t, c) if self.share_temporal else (n, 1, t * c)
        if is_channels_last_3d(x):
            # Reduce [N, T, H, W, C] over H, W with C innermost: the same numbers, ~10-30x
            # faster than reducing the [N, C, T, H, W] view of that memory.
            bases = {kind: _REDUCE[kind](x.permute(0, 2, 3, 4, 1), dim=(2, 3)).reshape(shape) for kind in self._bases}
        else:
            bases = {kind: _REDUCE[kind](x, dim=(3, 4)).transpose(1, 2).reshape(shape) for kind in self._bases}
        tanh_z = self._tanh_z(bases)
        if self.share_temporal:
            tanh_z = tanh_z.view(n, c, 1, 1, 1)
        else:
            tanh_z = tanh_z.view(n, t, c).transpose(1, 2).reshape(n, c, t, 1, 1)
        return self.gate_probe(1 + tanh_z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, variant={self.variant}, share_temporal={self.share_temporal}, "
            f"num_frames={self.num_frames}, zero_init={self.zero_init}, nonlinear={self.nonlinear}, "
            f"bias={self.has_bias}"
        )


def build(context_cfg, dim: int, num_frames: int) -> CompactGlobalDescriptor:
    """The CGD of CONTEXT.CGD for ``dim`` channels at a stage with ``num_frames`` frames."""
    cgd = context_cfg.CGD
    return CompactGlobalDescriptor(dim, num_frames=num_frames, variant=cgd.VARIANT,
                                   share_temporal=cgd.SHARE_TEMPORAL, zero_init=cgd.ZERO_INIT,
                                   nonlinear=cgd.NONLINEAR, bias=cgd.BIAS)
