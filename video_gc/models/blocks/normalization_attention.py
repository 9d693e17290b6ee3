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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        # Statistics in at least float32 and outside autocast: the std over C and the
        # softmax are fragile in half precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(n, c, -1).to(torch.promote_types(x.dtype, torch.float32))
            channel_mean = flat.mean(dim=1)  # [N, P]
            similarity = -(channel_mean - channel_mean.mean(dim=1, keepdim=True)).abs()
            # softmax subtracts the row maximum, so exp cannot underflow to an all-zero row.
            weights = torch.softmax(similarity, dim=1)
            g = torch.bmm(flat, weights.unsqueeze(-1)).squeeze(-1)  # [N, C]
            mean = g.mean(dim=1, keepdim=True)
            std = g.std(dim=1, correction=0, keepdim=True)
            g_hat = self.gamma * (g - mean) / (std + self.eps) + self.beta
        gate = self.gate_probe(torch.sigmoid(g_hat).view(n, c, 1, 1, 1))
        return x * gate.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
