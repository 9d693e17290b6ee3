"""GCNet Section 3.2 statistics on constructed inputs (video_gc.analysis.context_stats)."""

import math

import pytest
import torch

from video_gc.analysis.context_stats import (
    attention_entropy,
    check_distributions,
    default_num_queries,
    gate_distribution,
    mean_cosine_distance,
    mean_jsd,
    positions_last,
    sample_queries,
)


def _naive_cosine(v):
    """1/N^2 sum_ij (1 - cos)/2 with a double loop (zero vectors left out)."""
    out = []
    for video in v.double():
        rows = [r for r in video if r.norm() > 0]
        total = 0.0
        for a in rows:
            for b in rows:
                total += (1 - torch.dot(a, b).item() / (a.norm().item() * b.norm().item())) / 2
        out.append(total / len(rows) ** 2)
    return torch.tensor(out, dtype=torch.float64)


def _naive_jsd(p, queries=None):
    out = []
    for video in p.double():
        qs = range(video.shape[0]) if queries is None else queries.tolist()
        total = 0.0
        for i in qs:
            for j in range(video.shape[0]):
                a, b = video[i], video[j]
                m = (a + b) / 2
                term = 0.0
                for k in range(video.shape[1]):
                    if a[k] > 0:
                        term += a[k].item() * math.log(a[k].item() / m[k].item())
                    if b[k] > 0:
                        term += b[k].item() * math.log(b[k].item() / m[k].item())
                total += term / 2
        out.append(total / (len(qs) * video.shape[0]))
    return torch.tensor(out, dtype=torch.float64)


def test_identical_maps_have_zero_distance():
    row = torch.softmax(torch.randn(20), dim=0)
    maps = row.expand(2, 12, 20).clone()
    assert mean_cosine_distance(maps).abs().max().item() < 1e-6
    assert mean_jsd(maps).abs().max().item() < 1e-9


def test_disjoint_one_hot_maps_give_ln2_and_half():
    # N one-hot rows on different keys: off-diagonal pairs have JSD ln 2 and cosine distance
    # 0.5; the N diagonal terms are 0 (the paper's 1/N^2 sum includes i = j).
    n = 6
    maps = torch.eye(n).unsqueeze(0)
    off_diag = (n * n - n) / (n * n)
    assert mean_jsd(maps).item() == pytest.approx(math.log(2) * off_diag, abs=1e-6)
    assert mean_cosine_distance(maps).item() == pytest.approx(0.5 * off_diag, abs=1e-6)
    # A single pair of disjoint maps, measured as a query against the other row only.
    pair = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert mean_jsd(pair, query_index=torch.tensor([0])).item() == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_opposite_vectors_have_distance_one():
    v = torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]])
    # pairs: 2 diagonal (0) + 2 opposite (1) -> 0.5
    assert mean_cosine_distance(v).item() == pytest.approx(0.5, abs=1e-6)


def test_batched_equals_naive_double_loop():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 9, 5, generator=g)
    v[1, 4] = 0.0  # a zero vector is left out of the pairs
    assert torch.allclose(mean_cosine_distance(v).double(), _naive_cosine(v), atol=1e-6)

    logits = torch.randn(2, 7, 11, generator=g) * 2
    p = torch.softmax(logits, dim=-1)
    p[0, 2] = torch.zeros(11)
    p[0, 2, 3] = 1.0  # a one-hot row exercises the 0 * log 0 terms
    assert torch.allclose(mean_jsd(p).double(), _naive_jsd(p), atol=1e-6)
    # Tiny chunks give the same answer as one chunk.
    assert torch.allclose(mean_jsd(p, chunk_elements=1), mean_jsd(p), atol=1e-7)
    # Sampled queries equal the naive loop over the same queries.
    idx = torch.tensor([1, 4, 6])
    assert torch.allclose(mean_jsd(p, query_index=idx).double(), _naive_jsd(p, idx), atol=1e-6)


def test_all_zero_vectors_are_undefined():
    assert torch.isnan(mean_cosine_distance(torch.zeros(1, 5, 3))).all()


def test_query_sampling():
    assert default_num_queries(10, 10, budget=10 ** 6) == 10
    assert default_num_queries(1000, 100, budget=10 ** 6) == 10
    assert sample_queries(50, None) is None
    assert sample_queries(50, 80) is None
    idx = sample_queries(50, 7, generator=torch.Generator().manual_seed(1))
    assert idx.shape == (7,) and len(set(idx.tolist())) == 7 and idx.max() < 50
    with pytest.raises(ValueError):
        sample_queries(50, 0)


def test_positions_last_order():
    x = torch.arange(2 * 3 * 2 * 2 * 2).reshape(2, 3, 2, 2, 2).float()
    v = positions_last(x)
    assert v.shape == (2, 8, 3)
    # position 5 is (t=1, h=0, w=1)
    assert torch.equal(v[1, 5], x[1, :, 1, 0, 1])


def test_check_distributions_names_the_block():
    check_distributions(torch.softmax(torch.randn(1, 4, 6), -1), "res3.1.nonlocal")
    with pytest.raises(ValueError, match="res3.1.nonlocal.*sum to 1"):
        check_distributions(torch.rand(1, 4, 6) + 1, "res3.1.nonlocal")
    with pytest.raises(ValueError, match="negative"):
        check_distributions(torch.randn(1, 4, 6), "res3.1.nonlocal")


def test_attention_entropy_uniform_and_peaked():
    uniform = torch.full((1, 16), 1 / 16)
    peaked = torch.zeros(1, 16)
    peaked[0, 3] = 1.0
    u, p = attention_entropy(uniform), attention_entropy(peaked)
    assert u["entropy"].item() == pytest.approx(math.log(16), abs=1e-6)
    assert u["normalized_entropy"].item() == pytest.approx(1.0, abs=1e-6)
    assert u["max_weight_ratio"].item() == pytest.approx(1.0, abs=1e-6)
    assert p["normalized_entropy"].item() == pytest.approx(0.0, abs=1e-9)
    assert p["max_weight"].item() == pytest.approx(1.0)


def test_gate_distribution():
    values = torch.arange(101, dtype=torch.float32).reshape(1, 101, 1, 1, 1) / 100
    stats = gate_distribution(values)
    assert stats["p50"] == pytest.approx(0.5) and stats["p5"] == pytest.approx(0.05)
    assert stats["min"] == 0.0 and stats["max"] == pytest.approx(1.0)
    assert stats["mean"] == pytest.approx(0.5) and stats["count"] == 101
