"""Normalization-Attention (NA) module (Ma et al., NA paper, Sec. 4, Eq. 4-9).

As the official code computes it, over all P = T*H*W positions of a clip:

    c_p   = mean_C x_p                              channel mean at each position
    a     = softmax_p(-|c_p - mean_p c_p|)          context similarity (Eq. 4-6)
    g     = sum_p a_p x_p                           global context in R^C (Eq. 6)
    g_hat = gamma (g - mean_C g) / (std_C g + eps) + beta          (Eq. 7-8)
    Y     = X * sigmoid(g_hat)                                      (Eq. 9)

Where the official code differs from the paper's equations (we follow the code):
Eq. 5 takes the L1 distance -||x_i - C||_1 of the C-vectors, the code the
absolute difference of the channel means; Eq. 7 puts eps inside the root,
sigma = sqrt(var + eps), the code adds it to the standard deviation. The
standard deviation is Eq. 7's population form (1/C).

Only the scalars gamma (init 0) and beta (init 1) are learned: 2 parameters.
At init the gate is the constant sigmoid(1).
"""

import torch
from torch import nn

from ..fast import no_autocast


def _weighted_sum(flat: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_p a_p x_p as [N, C] for x [N, C, P] and a [N, P]. Written as a [1, P] x [P, C]
    product per sample: PyTorch's batched [C, P] x [P, 1] runs ~10x slower for N > 1."""
    return torch.bmm(weights.unsqueeze(1), flat.transpose(1, 2)).squeeze(1)


class NormalizationAttention(nn.Module):
    """NA gate on [N, C, T, H, W] features.

    Args:
        dim: channels C (kept for ``extra_repr`` and checks; NA has no per-channel weights).
        eps: added to std_C(g).

    Probe: ``gate_probe`` sees sigmoid(g_hat), [N, C, 1, 1, 1].
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(()))
        self.beta = nn.Parameter(torch.empty(()))
        self.gate_probe = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official code's start: gamma = 0, beta = 1."""
        nn.init.zeros_(self.gamma)
        nn.init.ones_(self.beta)

    def _attention(self, channel_mean: torch.Tensor) -> torch.Tensor:
        """Eq. 4-6 weights a [N, P] from the channel means c [N, P]."""
        centred = channel_mean - channel_mean.mean(dim=1, keepdim=True)
        # softmax subtracts the row maximum, so exp cannot underflow to an all-zero row.
        return torch.softmax(centred.abs_().neg_(), dim=1)

    def _gate(self, g: torch.Tensor) -> torch.Tensor:
        """Eq. 7-9 gate sigmoid(g_hat) [N, C, 1, 1, 1] from the global context g [N, C]."""
        std, mean = torch.std_mean(g, dim=1, correction=0, keepdim=True)
        gate = torch.sigmoid(self.gamma * (g - mean) / (std + self.eps) + self.beta)
        return self.gate_probe(gate.view(*g.shape, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        # Statistics in at least float32 and outside autocast: the std over C and the
        # softmax are fragile in half precision.
        with no_autocast(x):
            flat = x.reshape(n, c, -1).to(torch.promote_types(x.dtype, torch.float32))
            weights = self._attention(flat.mean(dim=1))
            gate = self._gate(_weighted_sum(flat, weights))
        return x * gate.to(x.dtype)

    @staticmethod
    def position_key(weight: torch.Tensor) -> torch.Tensor:
        """mean_C(W) [C_in] for a 1x1x1 conv's weight W [C, C_in]: the channel mean of
        y = W h + b at a position is <mean_C(W), h> + mean(b)."""
        return weight.mean(dim=0)

    def fold_pointwise_conv(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, key: torch.Tensor):
        """Inference: this block on y = W h + b (a 1x1x1 conv; W [C, C_in] and b in the
        statistics' precision, float32 or wider) as the per-sample channel affine
        ``(scale, shift)`` = (gate, None), read from h.

        Both statistics are linear in y: the channel mean is c_p = <key, h_p> +
        mean(b) with ``key = position_key(W)``, and as the weights a sum to 1,
        g = W (sum_p a_p h_p) + b. So they cost two passes over the conv's input h
        (C_in = C / 4 channels in a bottleneck) and none over y; the constant mean(b)
        cancels in Eq. 5's centring. Equal to ``self(y)`` up to float rounding; gate [N, C].
        """
        n, c_in = h.shape[:2]
        with no_autocast(h):
            flat = h.reshape(n, c_in, -1)  # a view in either memory format
            flat = flat if flat.dtype == weight.dtype else flat.to(weight.dtype)
            weights = self._attention(torch.matmul(key, flat))
            g = torch.addmm(bias, _weighted_sum(flat, weights), weight.t())
            return self._gate(g).view(n, -1), None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
