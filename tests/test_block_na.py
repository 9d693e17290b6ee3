"""NormalizationAttention against its formulas (NA paper Eq. 4-9, official-code form)."""

import math

import pytest
import torch

from video_gc.models.blocks import NormalizationAttention


def _by_hand(x: torch.Tensor, gamma: float, beta: float, eps: float, std_form: str = "official") -> torch.Tensor:
    out = torch.empty_like(x)
    n, c = x.shape[:2]
    for b in range(n):
        positions = x[b].reshape(c, -1).t()  # [P, C]
        c_mean = [p.sum() / c for p in positions]
        centre = sum(c_mean) / len(c_mean)
        dist = [abs(float(v - centre)) for v in c_mean]
        # exp(-d_p) / sum_q exp(-d_q), scaled by exp(min d) so that it cannot underflow.
        scores = [math.exp(min(dist) - d) for d in dist]
        total = sum(scores)
        g = sum((s / total) * p for s, p in zip(scores, positions))
        mu = g.sum() / c
        squares = float(((g - mu) ** 2).sum())
        if std_form == "official":  # unbiased std, eps added after the root
            sigma = math.sqrt(squares / (c - 1)) + eps
        elif std_form == "biased":  # 1/C std, eps added after the root
            sigma = math.sqrt(squares / c) + eps
        else:  # Eq. 7: 1/C variance, eps inside the root
            sigma = math.sqrt(squares / c + eps)
        g_hat = gamma * (g - mu) / sigma + beta
        out[b] = x[b] * torch.sigmoid(g_hat).view(c, 1, 1, 1)
    return out


@pytest.mark.parametrize("std_form", ["official", "paper", "biased"])
def test_matches_formulas_by_hand(std_form):
    block = NormalizationAttention(6, std_form=std_form).double()
    with torch.no_grad():
        block.gamma.fill_(1.7)
        block.beta.fill_(-0.4)
    x = torch.randn(2, 6, 2, 3, 4, dtype=torch.float64)
    gates = []
    block.gate_probe.register_forward_hook(lambda m, i, o: gates.append(o))
    torch.testing.assert_close(block(x), _by_hand(x, 1.7, -0.4, 1e-5, std_form), rtol=1e-10, atol=1e-10)
    for other in {"official", "paper", "biased"} - {std_form}:
        assert not torch.allclose(block(x), _by_hand(x, 1.7, -0.4, 1e-5, other), rtol=1e-6, atol=1e-6)
    assert gates[0].shape == (2, 6, 1, 1, 1)
    assert not torch.allclose(gates[0][0], gates[0][0].mean())  # a per-channel gate


def test_init_is_the_official_one_and_output_is_pinned():
    block = NormalizationAttention(8)
    assert block.gamma.item() == 0.0 and block.beta.item() == 1.0
    assert sum(p.numel() for p in block.parameters()) == 2
    x = torch.randn(2, 8, 2, 3, 3)
    torch.testing.assert_close(block(x), _by_hand(x, 0.0, 1.0, 1e-5))
    torch.testing.assert_close(block(x), x * torch.sigmoid(torch.tensor(1.0)))


def test_softmax_over_positions_is_numerically_stable():
    block = NormalizationAttention(4)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(1, 4, 2, 4, 4)
    x[..., 0, 0] += 2e4  # |c_p - mean| ~ 1e4: exp(-1e4) underflows without max-subtraction
    out = block(x)
    assert torch.isfinite(out).all()
    # The softmax concentrates on the positions closest to the mean, so the gate is well defined.
    torch.testing.assert_close(out, _by_hand(x.double(), 1.0, 1.0, 1e-5).float(), rtol=1e-4, atol=1e-4)


def test_config_default_eps_is_the_official_one():
    from video_gc.config import get_cfg
    from video_gc.models.blocks import build_context_block

    cfg = get_cfg()
    cfg.CONTEXT.TYPE = "na"
    block = build_context_block(cfg.CONTEXT, 6, 2).double()
    with torch.no_grad():
        block.gamma.fill_(2.0)
    # Channels differ by ~1e-5 at every position, so std_C(g) is of the order of eps and eps shows.
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 1, 2, 3, 4, generator=gen, dtype=torch.float64)
    x = base + 1e-5 * torch.randn(2, 6, 2, 3, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(block(x), _by_hand(x, 2.0, 1.0, 1e-5), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(_by_hand(x, 2.0, 1.0, 1e-5), _by_hand(x, 2.0, 1.0, 1e-3), rtol=1e-3, atol=1e-3)


def test_config_picks_the_std_form_and_defaults_to_the_official_code():
    from video_gc.config import load_config
    from video_gc.models.blocks import build_context_block

    x = torch.randn(2, 6, 2, 3, 4, dtype=torch.float64)
    for opts, form in (([], "official"), (["CONTEXT.NA.STD_FORM", "paper"], "paper")):
        cfg = load_config(None, ["CONTEXT.TYPE", "na", "CONTEXT.LOCATION", "[[0], [], [], []]"] + opts)
        block = build_context_block(cfg.CONTEXT, 6, 2).double()
        with torch.no_grad():
            block.gamma.fill_(1.3)
        torch.testing.assert_close(block(x), _by_hand(x, 1.3, 1.0, 1e-5, form), rtol=1e-10, atol=1e-10)
