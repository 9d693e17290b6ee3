"""Statistics of GCNet Section 3.2 (Cao et al., "GCNet", Table 1) as batched tensor code.

For a set of vectors v_1..v_N (the positions of one video) GCNet defines

    avg_dist = 1 / N^2 * sum_i sum_j dist(v_i, v_j)

with the diagonal i = j included, exactly as the paper's formula is written (each diagonal
term is 0, so the average is (N - 1) / N times the average over distinct pairs).

- cosine distance, dist = (1 - cos(v_i, v_j)) / 2. The sum of the normalised Gram matrix
  U U^T (rows u_i = v_i / |v_i|) equals |sum_i u_i|^2, so the exact all-pairs average costs
  O(N * D) and never needs sampling. Zero vectors have no direction (e.g. a non-local output
  whose BN still has gamma = 0): they are left out, and a video with none left gives NaN.
- Jensen-Shannon divergence (natural log, so at most ln 2) between attention rows that are
  probability distributions: JSD(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2. This needs every
  pair, O(N^2 * K); it runs in chunks of query rows, and over a random sample of query rows
  (all key rows j) when N^2 * K is too large. The sample gives an unbiased estimate of the
  same average.

Every function takes a batch [B, N, D] and returns one value per video, [B].
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "mean_cosine_distance",
    "mean_jsd",
    "default_num_queries",
    "sample_queries",
    "positions_last",
    "attention_entropy",
    "gate_distribution",
    "check_distributions",
]

# Default budget of pair elements (queries x keys-rows x map length) for the JSD of one video.
JSD_PAIR_BUDGET = 2 ** 28
# Elements of one chunk of the [queries, N, K] mixture tensor (float64: 32 MiB).
CHUNK_ELEMENTS = 2 ** 22
GATE_PERCENTILES = (5, 25, 50, 75, 95)


def positions_last(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] feature map -> [B, T*H*W, C] position vectors in (t, h, w) order."""
    return x.flatten(2).transpose(1, 2)


def mean_cosine_distance(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """avg over all (i, j), diagonal included, of (1 - cos(v_i, v_j)) / 2; v is [B, N, D] -> [B]."""
    v = v.detach().double()
    norms = v.norm(dim=-1, keepdim=True)
    valid = norms > eps
    u = torch.where(valid, v / norms.clamp_min(eps), torch.zeros_like(v))
    count = valid.squeeze(-1).sum(-1).double()
    gram_sum = u.sum(dim=1).pow(2).sum(-1)  # = sum_ij u_i . u_j
    mean_cos = gram_sum / count.pow(2)  # NaN where count == 0, on purpose
    return ((1.0 - mean_cos) / 2.0).clamp(0.0, 1.0).float()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def default_num_queries(num_positions: int, map_length: int, budget: int = JSD_PAIR_BUDGET) -> int:
    """All query rows when N * N * K fits the budget, else as many as fit (at least 1)."""
    per_query = num_positions * map_length
    return max(1, min(num_positions, budget // max(per_query, 1)))


def sample_queries(num_positions: int, num_queries: int | None, generator: torch.Generator | None = None,
                   device=None) -> torch.Tensor | None:
    """Sorted random query indices without replacement, or None for all of them."""
    if num_queries is None or num_queries >= num_positions:
        return None
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1, got {num_queries}")
    idx = torch.randperm(num_positions, generator=generator)[:num_queries]
    return idx.sort().values.to(device)


def mean_jsd(p: torch.Tensor, query_index: torch.Tensor | None = None,
             chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """avg over queries i (all, or ``query_index``) and all rows j of JSD(p_i, p_j); p is [B, N, K] -> [B].

    Rows must be probability distributions (non-negative, summing to 1).
    """
    p = p.detach().double()
    batch, n, k = p.shape
    queries = p if query_index is None else p[:, query_index]
    row_entropy = _entropy(p)  # [B, N]
    query_entropy = _entropy(queries)  # [B, Q]
    chunk = max(1, chunk_elements // max(n * k, 1))
    out = torch.zeros(batch, dtype=torch.float64, device=p.device)
    for b in range(batch):
        total = p.new_zeros(())
        for start in range(0, queries.shape[1], chunk):
            q = queries[b, start:start + chunk]  # [c, K]
            mix = (q[:, None, :] + p[b, None, :, :]) * 0.5  # [c, N, K]
            jsd = _entropy(mix) - 0.5 * (query_entropy[b, start:start + chunk, None] + row_entropy[b, None, :])
            total = total + jsd.clamp_min(0.0).sum()
        out[b] = total / (queries.shape[1] * n)
    return out.float()


def check_distributions(p: torch.Tensor, what: str, atol: float = 1e-3) -> None:
    """Raise ValueError naming ``what`` unless every row of p is a probability distribution."""
    p = p.detach().float()
    if (p < -atol).any():
        raise ValueError(f"{what}: attention rows have negative entries, they are not distributions")
    sums = p.sum(-1)
    worst = (sums - 1.0).abs().max().item()
    if worst > atol:
        raise ValueError(f"{what}: attention rows do not sum to 1 (largest error {worst:.3g})")


def attention_entropy(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Peakedness of attention-pooling weights alpha [B, N] (rows sum to 1), per video.

    entropy (nats), normalized_entropy = entropy / ln N (1 = uniform, 0 = one position),
    max_weight, and max_weight_ratio = max_weight * N (1 = uniform).
    """
    alpha = alpha.detach().double().flatten(1)
    n = alpha.shape[1]
    ent = _entropy(alpha)
    top = alpha.max(dim=1).values
    return {
        "entropy": ent.float(),
        "normalized_entropy": (ent / math.log(n)).float() if n > 1 else torch.zeros_like(ent).float(),
        "max_weight": top.float(),
        "max_weight_ratio": (top * n).float(),
    }


def gate_distribution(values: torch.Tensor) -> dict[str, float]:
    """mean / std / min / max and percentiles of all channel-gate values given (any shape)."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        raise ValueError("gate_distribution: no gate values recorded")
    q = torch.tensor([p / 100.0 for p in GATE_PERCENTILES], dtype=torch.float64, device=v.device)
    # torch.quantile refuses very large inputs; a sorted-index lookup has no such limit.
    ordered = v.sort().values
    pos = (q * (v.numel() - 1)).round().long()
    stats = {
        "mean": v.mean().item(),
        "std": v.std(unbiased=False).item(),
        "min": ordered[0].item(),
        "max": ordered[-1].item(),
        "count": int(v.numel()),
    }
    for pct, idx in zip(GATE_PERCENTILES, pos.tolist()):
        stats[f"p{pct}"] = ordered[idx].item()
    return stats
