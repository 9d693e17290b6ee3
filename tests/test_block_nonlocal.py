"""NonLocalBlock against the Non-local / GCNet Eq. 1 definition, computed naively."""

import math

import pytest
import torch

from video_gc.models.blocks import NonLocalBlock

INSTANTIATIONS = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")


def _randomize(block: NonLocalBlock, seed: int = 0) -> None:
    """Random values for every parameter and BN buffer (gamma non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
        block.bn.running_mean.copy_(torch.randn(block.dim, generator=gen, dtype=torch.float64))
        block.bn.running_var.copy_(torch.rand(block.dim, generator=gen, dtype=torch.float64) + 0.5)


def _linear(conv: torch.nn.Conv3d, v: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 conv applied to one feature vector."""
    out = conv.weight.flatten(1) @ v
    return out + conv.bias if conv.bias is not None else out


def _naive(block: NonLocalBlock, x: torch.Tensor, pool):
    """z_i = x_i + BN(W_z sum_j w_ij g(x_j)), one query position at a time."""
    n, c, t, h, w = x.shape
    keys = x
    if pool:
        pt, ph, pw = pool
        keys = x.reshape(n, c, t // pt, pt, h // ph, ph, w // pw, pw).amax(dim=(3, 5, 7))
    out = torch.empty_like(x)
    weights_all = torch.empty(n, t * h * w, keys[0, 0].numel(), dtype=x.dtype)
    bn = block.bn
    for b in range(n):
        xq = x[b].reshape(c, -1)
        xk = keys[b].reshape(c, -1)
        nk = xk.shape[1]
        g = [_linear(block.conv_g, xk[:, j]) for j in range(nk)]
        if block.instantiation != "gaussian":
            phi = [_linear(block.conv_phi, xk[:, j]) for j in range(nk)]
        for i in range(xq.shape[1]):
            xi = xq[:, i]
            if block.instantiation == "gaussian":
                f = torch.stack([torch.exp(xi @ xk[:, j]) for j in range(nk)])
                wts = f / f.sum()
            else:
                theta = _linear(block.conv_theta, xi)
                if block.instantiation == "embedded_gaussian":
                    f = torch.stack([torch.exp(theta @ phi[j] / math.sqrt(block.dim_inner)) for j in range(nk)])
                    wts = f / f.sum()
                elif block.instantiation == "dot_product":
                    wts = torch.stack([theta @ phi[j] for j in range(nk)]) / nk
                else:
                    w_f = block.concat_project.weight.flatten()
                    wts = torch.stack([torch.relu(w_f @ torch.cat([theta, phi[j]])) for j in range(nk)]) / nk
            weights_all[b, i] = wts
            y = sum(wts[j] * g[j] for j in range(nk))
            wz = _linear(block.conv_out, y)
            bn_out = (wz - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            out[b].reshape(c, -1)[:, i] = xi + bn_out
    return out, weights_all


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
@pytest.mark.parametrize("pool", [None, (1, 2, 2)])
def test_nonlocal_matches_naive_loop(instantiation, pool):
    torch.manual_seed(1)
    block = NonLocalBlock(6, dim_inner=4, instantiation=instantiation, pool_size=pool).double().eval()
    _randomize(block)
    x = torch.randn(2, 6, 2, 4, 4, dtype=torch.float64) * 0.5
    captured = {}
    block.attention_probe.register_forward_hook(lambda m, i, o: captured.setdefault("w", o))
    expected, expected_w = _naive(block, x, pool)
    out = block(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(captured["w"], expected_w, rtol=1e-10, atol=1e-10)
    nk = 2 * 4 * 4 // (4 if pool else 1)
    assert captured["w"].shape == (2, 2 * 4 * 4, nk)


@pytest.mark.parametrize("instantiation", INSTANTIATIONS + ("softmax",))
def test_nonlocal_is_identity_at_init(instantiation):
    torch.manual_seed(0)
    block = NonLocalBlock(8, instantiation=instantiation)
    x = torch.randn(2, 8, 2, 4, 6)
    for mode in (block.train(), block.eval()):
        torch.testing.assert_close(mode(x), x, rtol=0, atol=0)
    assert torch.count_nonzero(block.bn.weight) == 0


def test_softmax_alias_and_pytorch_names():
    block = NonLocalBlock(16, instantiation="softmax")
    assert block.instantiation == "embedded_gaussian"
    names = {k.rsplit(".", 1)[0] for k in block.state_dict()}
    assert names == {"conv_theta", "conv_phi", "conv_g", "conv_out", "bn"}
    gaussian = NonLocalBlock(16, instantiation="gaussian")
    assert not hasattr(gaussian, "conv_theta") and not hasattr(gaussian, "conv_phi")
    concat = NonLocalBlock(16, instantiation="concatenation")
    assert concat.concat_project.weight.shape == (1, 16, 1, 1, 1)


def test_nonlocal_param_count_matches_reference():
    # The Non-local paper's +5 NL on Slow R50 (2 at C=512, 3 at C=1024) adds 39,812,560 - 32,454,096.
    count = lambda dim: sum(p.numel() for p in NonLocalBlock(dim).parameters())  # noqa: E731
    assert 2 * count(512) + 3 * count(1024) == 39_812_560 - 32_454_096
    c, inner = 512, 256
    assert count(c) == 4 * c * inner + 3 * inner + c + 2 * c


def test_output_probe_sees_the_residual_branch():
    torch.manual_seed(0)
    block = NonLocalBlock(8, pool_size=None).eval()
    _randomize(block.float(), seed=3)
    x = torch.randn(1, 8, 2, 3, 3)
    captured = {}
    block.output_probe.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    z = block(x)
    torch.testing.assert_close(captured["out"], z - x)
    assert captured["out"].shape == x.shape


def test_unknown_instantiation_names_the_choices():
    with pytest.raises(ValueError, match="unknown instantiation 'cosine'.*embedded_gaussian"):
        NonLocalBlock(8, instantiation="cosine")
