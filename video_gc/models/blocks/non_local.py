"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018).

GCNet (Cao et al.) Eq. 1 writes the block as

    z_i = x_i + W_z sum_j w_ij (W_v x_j),   w_ij = f(x_i, x_j) / C(x),

and Section 3.1 lists the four pairwise functions implemented here. ``W_v`` is
``conv_g`` (the Non-local paper's g), the query / key embeddings ``W_q`` / ``W_k``
are ``conv_theta`` / ``conv_phi`` and ``W_z`` is ``conv_out`` followed by a
BatchNorm ``bn`` whose gamma starts at zero, so the block starts as the identity.
Submodule names follow PySlowFast so its NL checkpoints load by name.
"""

from typing import Optional, Sequence

import torch
from torch import nn

_INSTANTIATIONS = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")
# PySlowFast calls the scaled embedded Gaussian "softmax".
_ALIASES = {"softmax": "embedded_gaussian"}
INSTANTIATIONS = _INSTANTIATIONS + tuple(_ALIASES)  # every name the constructor accepts


class NonLocalBlock(nn.Module):
    """Space-time non-local block on [N, C, T, H, W] features.

    Pairwise functions (GCNet Sec. 3.1; Non-local paper Sec. 3.2):

    - ``gaussian``: w_ij = softmax_j(x_i . x_j) on the raw features (no theta /
      phi convs are created); g is kept, as in the Non-local paper.
    - ``embedded_gaussian`` (alias ``softmax``): softmax_j(theta_i . phi_j *
      dim_inner^-0.5); the scale is PySlowFast's / Caffe2's.
    - ``dot_product``: theta_i . phi_j / N_keys.
    - ``concatenation``: ReLU(w_f . [theta_i, phi_j]) / N_keys, with w_f the
      weight of ``concat_project`` (a 2 * dim_inner -> 1 1x1x1 conv without bias,
      as w_f is a weight vector in the paper).

    When ``pool_size`` is set the keys (the input of phi and g, and the raw key
    features of ``gaussian``) are max-pooled with kernel = stride = pool_size.

    Args:
        dim: channels C of the input and output.
        dim_inner: embedding width, C // 2 by default.
        instantiation: one of the pairwise functions above.
        pool_size: (t, h, w) max-pool subsampling of the keys, or None.
        zero_init_final_bn: start the output BN with gamma = 0 (identity block).
        bn_eps, bn_momentum: the output BN's settings.
        norm_module: BatchNorm class for the output norm (e.g. nn.SyncBatchNorm).

    All convs keep their biases, for PySlowFast's names and parameter counts, although
    some cannot learn: a training-mode BN removes conv_out's, and the softmax's shift
    invariance removes phi's under ``embedded_gaussian``.

    Probes: ``attention_probe`` sees the weights w [N, Nq, Nk] (queries in
    (t, h, w) order); ``output_probe`` sees BN(W_z y) [N, C, T, H, W].
    """

    is_context_block = True  # kept whole (one opaque call) by the inference rewrite

    def __init__(
        self,
        dim: int,
        dim_inner: Optional[int] = None,
        instantiation: str = "embedded_gaussian",
        pool_size: Optional[Sequence[int]] = (1, 2, 2),
        zero_init_final_bn: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        norm_module: type = nn.BatchNorm3d,
    ) -> None:
        super().__init__()
        instantiation = _ALIASES.get(instantiation, instantiation)
        if instantiation not in _INSTANTIATIONS:
            allowed = ", ".join(INSTANTIATIONS)
            raise ValueError(f"NonLocalBlock: unknown instantiation {instantiation!r}; allowed values: {allowed}")
        self.dim = dim
        self.dim_inner = dim_inner if dim_inner is not None else dim // 2
        self.instantiation = instantiation
        self.zero_init_final_bn = zero_init_final_bn
        if pool_size is not None and all(int(k) == 1 for k in pool_size):
            pool_size = None
        self.pool_size = tuple(int(k) for k in pool_size) if pool_size is not None else None

        if instantiation != "gaussian":
            self.conv_theta = nn.Conv3d(dim, self.dim_inner, kernel_size=1)
            self.conv_phi = nn.Conv3d(dim, self.dim_inner, kernel_size=1)
        self.conv_g = nn.Conv3d(dim, self.dim_inner, kernel_size=1)
        if instantiation == "concatenation":
            self.concat_project = nn.Conv3d(2 * self.dim_inner, 1, kernel_size=1, bias=False)
        self.pool = (
            nn.MaxPool3d(kernel_size=self.pool_size, stride=self.pool_size) if self.pool_size else nn.Identity()
        )
        self.conv_out = nn.Conv3d(self.dim_inner, dim, kernel_size=1)
        self.bn = norm_module(dim, eps=bn_eps, momentum=bn_momentum)
        self.attention_probe = nn.Identity()
        self.output_probe = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convs: Kaiming-normal fan_out ("c2_msra", as the backbone), zero bias;
        output BN: gamma 0 (or 1), beta 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.bn.reset_parameters()
        if self.zero_init_final_bn:
            nn.init.zeros_(self.bn.weight)

    def _affinity(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Normalised pairwise weights w [N, Nq, Nk]."""
        if self.instantiation == "gaussian":
            query = x.flatten(2)
            key = keys.flatten(2)
        else:
            query = self.conv_theta(x).flatten(2)
            key = self.conv_phi(keys).flatten(2)
        num_keys = key.shape[-1]
        if self.instantiation == "concatenation":
            # w_f . [theta_i, phi_j] = w_theta . theta_i + w_phi . phi_j: the two
            # halves of w_f act separately, so the [Nq, Nk, 2 * dim_inner] concat is never built.
            w_f = self.concat_project.weight.view(1, 2 * self.dim_inner)
            w_theta, w_phi = w_f[:, : self.dim_inner], w_f[:, self.dim_inner :]
            q_term = torch.matmul(w_theta, query)  # [N, 1, Nq]
            k_term = torch.matmul(w_phi, key)  # [N, 1, Nk]
            return torch.relu(q_term.transpose(1, 2) + k_term) / num_keys
        scores = torch.bmm(query.transpose(1, 2), key)  # [N, Nq, Nk]
        if self.instantiation == "dot_product":
            return scores / num_keys
        if self.instantiation == "embedded_gaussian":
            scores = scores * self.dim_inner**-0.5
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        keys = self.pool(x)
        weights = self.attention_probe(self._affinity(x, keys))
        value = self.conv_g(keys).flatten(2)  # [N, inner, Nk]
        y = torch.bmm(value, weights.transpose(1, 2))  # [N, inner, Nq]
        y = y.view(n, self.dim_inner, t, h, w)
        out = self.output_probe(self.bn(self.conv_out(y)))
        return x + out

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, dim_inner={self.dim_inner}, instantiation={self.instantiation}, "
            f"pool_size={self.pool_size}"
        )
