"""Normalization-Attention (NA) module (Ma et al., NA paper, Sec. 4, Eq. 4-9).

As the official code computes it, over all P = T*H*W positions of a clip:

    c_p   = mean_C x_p                              channel mean at each position
    a     = softmax_p(-|c_p - mean_p c_p|)          context similarity (Eq. 4-6)
    g     = sum_p a_p x_p                           global context in R^C (Eq. 6)
    g_hat = gamma (g - mean_C g) / sigma + beta                     (Eq. 7-8)
    Y     = X * sigmoid(g_hat)                                      (Eq. 9)

sigma has two forms (``std_form``):

- ``official`` (default): sigma = std_C(g) + eps with the unbiased standard
  deviation (divisor C - 1), as the official code computes it; it produced the
  paper's results and weights.
- ``paper``: Eq. 7 as printed, sigma = sqrt(1/C sum_c (g_c - mean_C g)^2 + eps).
- ``biased``: sigma = the 1/C standard deviation + eps, the form of video_gc's
  first configs (CONFIG_VERSION 1), so their NA checkpoints test as trained.

Eq. 5 takes the L1 distance -||x_i - C||_1 of the C-vectors; the official code,
which we follow, the absolute difference of the channel means.

Only the scalars gamma (init 0) and beta (init 1) are learned: 2 parameters.
At init the gate is the constant sigmoid(1) in either form.
"""

import torch
from torch import nn

from ..layout import no_autocast

STD_FORMS = ("official", "paper", "biased")


def weighted_sum(flat: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_p a_p x_p as [N, C] for x [N, C, P] and a [N, P]. Written as a [1, P] x [P, C]
    product per sample: PyTorch's batched [C, P] x [P, 1] runs ~10x slower for N > 1."""
    return torch.bmm(weights.unsqueeze(1), flat.transpose(1, 2)).squeeze(1)


class NormalizationAttention(nn.Module):
    """NA gate on [N, C, T, H, W] features.

    Args:
        dim: channels C (kept for ``extra_repr`` and checks; NA has no per-channel weights).
        eps: the eps of sigma.
        std_form: ``official`` (unbiased std + eps), ``paper`` (Eq. 7's sqrt(var + eps)) or
            ``biased`` (1/C std + eps).

    Probe: ``gate_probe`` sees sigmoid(g_hat), [N, C, 1, 1, 1].
    """

    is_context_block = True  # kept whole (one opaque call) by the inference rewrite

    def __init__(self, dim: int, eps: float = 1e-5, std_form: str = "official") -> None:
        super().__init__()
        if std_form not in STD_FORMS:
            raise ValueError(f"NormalizationAttention: unknown std_form {std_form!r}; allowed values: "
                             f"{', '.join(STD_FORMS)}")
        self.dim = dim
        self.eps = eps
        self.std_form = std_form
        self.gamma = nn.Parameter(torch.empty(()))
        self.beta = nn.Parameter(torch.empty(()))
        self.gate_probe = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official code's start: gamma = 0, beta = 1."""
        nn.init.zeros_(self.gamma)
        nn.init.ones_(self.beta)

    def attention(self, channel_mean: torch.Tensor) -> torch.Tensor:
        """Eq. 4-6 weights a [N, P] from the channel means c [N, P]."""
        centred = channel_mean - channel_mean.mean(dim=1, keepdim=True)
        # softmax subtracts the row maximum, so exp cannot underflow to an all-zero row.
        return torch.softmax(centred.abs_().neg_(), dim=1)

    def gate(self, g: torch.Tensor) -> torch.Tensor:
        """Eq. 7-9 gate sigmoid(g_hat) [N, C, 1, 1, 1] from the global context g [N, C]."""
        if self.std_form in ("official", "biased"):
            std, mean = torch.std_mean(g, dim=1, correction=int(self.std_form == "official"), keepdim=True)
            sigma = std + self.eps
        else:
            var, mean = torch.var_mean(g, dim=1, correction=0, keepdim=True)
            sigma = torch.sqrt(var + self.eps)
        gate = torch.sigmoid(self.gamma * (g - mean) / sigma + self.beta)
        return self.gate_probe(gate.view(*g.shape, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        # Statistics in at least float32 and outside autocast: the std over C and the
        # softmax are fragile in half precision.
        with no_autocast(x):
            flat = x.reshape(n, c, -1).to(torch.promote_types(x.dtype, torch.float32))
            weights = self.attention(flat.mean(dim=1))
            gate = self.gate(weighted_sum(flat, weights))
        return x * gate.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, std_form={self.std_form}"


def build(context_cfg, dim: int, num_frames: int) -> NormalizationAttention:
    """An NA block with CONTEXT.NA's settings."""
    return NormalizationAttention(dim, eps=context_cfg.NA.EPS, std_form=context_cfg.NA.STD_FORM)
