"""CompactGlobalDescriptor against the CGD paper's Eq. 10-12 and Table 2, by hand."""

import math

import pytest
import torch

from video_gc.models.blocks import CompactGlobalDescriptor

# Table 2 of the CGD paper, written out independently of the module.
TABLE2 = {
    "v1": ("avg", "avg"),
    "v2": ("avg", "softmax(avg)"),
    "v3": ("softmax(avg)", "avg"),
    "v4": ("avg", "max"),
    "v5": ("max", "avg"),
    "v6": ("softmax(avg)", "max"),
    "v7": ("softmax(max)", "avg"),
    "v8": ("v3", "v7"),
    "v9": ("v1", "v7"),
    "v10": ("v3", "v6"),
}
CASCADED = ("v8", "v9", "v10")


def _pool(frame: torch.Tensor, kind: str) -> torch.Tensor:
    """frame [C', H, W] -> [C'] (C' = C, or C*T for the concatenated frames)."""
    flat = frame.reshape(frame.shape[0], -1)
    inner = kind[len("softmax(") : -1] if kind.startswith("softmax(") else kind
    base = flat.max(dim=1).values if inner == "max" else flat.mean(dim=1)
    if inner != kind:
        e = torch.exp(base - base.max())
        return e / e.sum()
    return base


def _params(block, name):
    return dict(block.named_parameters())[name]


def _z_by_hand(block: CompactGlobalDescriptor, frames) -> torch.Tensor:
    """Eq. 12: z = tanh(sum_t g(X_t) f(X_t)^T w + b); one entry of ``frames`` per t."""
    variant = block.variant

    def simple(v, frame, w, b, outer):
        g_kind, f_kind = TABLE2[v]
        pre = _pool(frame, g_kind) * torch.dot(_pool(frame, f_kind), w)
        return pre if outer else torch.tanh(pre + b)

    if variant in CASCADED:
        gv, fv = TABLE2[variant]
        p = {k: _params(block, k) for k in ("w0", "b0", "w1", "b1", "w2", "b2")}
        total = 0
        for frame in frames:
            g = simple(gv, frame, p["w0"], p["b0"], outer=False)
            f = simple(fv, frame, p["w1"], p["b1"], outer=False)
            total = total + g * torch.dot(f, p["w2"])
        return torch.tanh(total + p["b2"])
    total = sum(simple(variant, frame, block.w, None, outer=True) for frame in frames)
    return torch.tanh(total + block.b)


def _randomize(block, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("variant", list(TABLE2))
def test_shared_form_equals_eq12_by_hand(variant):
    block = CompactGlobalDescriptor(6, num_frames=3, variant=variant).double()
    _randomize(block)
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float64)
    gates = []
    block.gate_probe.register_forward_hook(lambda m, i, o: gates.append(o))
    out = block(x)
    for b in range(2):
        z = _z_by_hand(block, [x[b, :, t] for t in range(3)])
        torch.testing.assert_close(out[b], x[b] * (1 + z).view(6, 1, 1, 1), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gates[0][b].flatten(), 1 + z, rtol=1e-10, atol=1e-10)
    assert gates[0].shape == (2, 6, 1, 1, 1)


@pytest.mark.parametrize("variant", ["v1", "v6", "v10"])
def test_unshared_form_is_the_frame_concatenation(variant):
    """share_temporal=False: frames concatenated along channels (Fig. 4a), w in R^(C*T)."""
    c, t = 4, 3
    block = CompactGlobalDescriptor(c, num_frames=t, variant=variant, share_temporal=False).double()
    _randomize(block, seed=2)
    x = torch.randn(2, c, t, 3, 3, dtype=torch.float64)
    out = block(x)
    for b in range(2):
        stacked = torch.cat([x[b, :, i] for i in range(t)], dim=0)  # [T*C, H, W], t-major
        z = _z_by_hand(block, [stacked]).view(t, c).t()  # [C, T]
        torch.testing.assert_close(out[b], x[b] * (1 + z)[:, :, None, None], rtol=1e-10, atol=1e-10)


def test_v10_default_init_matches_official_formula():
    """Xavier-uniform w, zero b; at T = 1 the layer is the official code's image formula."""
    torch.manual_seed(0)
    c = 16
    block = CompactGlobalDescriptor(c)
    bound = math.sqrt(6.0 / (c + 1))
    for name in ("w0", "w1", "w2"):
        w = _params(block, name)
        assert w.abs().max() <= bound and w.abs().max() > bound / 2
    for name in ("b0", "b1", "b2"):
        assert torch.count_nonzero(_params(block, name)) == 0
    x = torch.randn(2, c, 1, 5, 5)
    w0, w1, w2 = (_params(block, k) for k in ("w0", "w1", "w2"))
    avg = x.mean(dim=(2, 3, 4))
    mx = x.amax(dim=(2, 3, 4))
    s = torch.softmax(avg, dim=1)
    a = torch.tanh((avg @ w0)[:, None] * s)
    m = torch.tanh((mx @ w1)[:, None] * s)
    z = torch.tanh((m @ w2)[:, None] * a)
    torch.testing.assert_close(block(x), x * (1 + z)[:, :, None, None, None])


@pytest.mark.parametrize("variant", list(TABLE2))
def test_zero_init_is_identity_and_can_leave_it(variant):
    block = CompactGlobalDescriptor(8, num_frames=2, variant=variant, zero_init=True)
    x = torch.randn(2, 8, 2, 3, 3, requires_grad=True)
    out = block(x)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    (out * torch.randn_like(out)).sum().backward()
    outer_w = "w2" if variant in CASCADED else "w"
    assert _params(block, outer_w).grad.abs().sum() > 0


def test_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    c = 64
    for t in (1, 4, 8, 32):
        assert count(CompactGlobalDescriptor(c, num_frames=t)) == 6 * c
        assert count(CompactGlobalDescriptor(c, num_frames=t, variant="v1")) == 2 * c
        assert count(CompactGlobalDescriptor(c, num_frames=t, share_temporal=False)) == 6 * c * t
    # The CGD paper's placement: v10 after conv1 of every R50 bottleneck (3 x 64, 4 x 128, 6 x 256, 3 x 512).
    widths = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert sum(count(CompactGlobalDescriptor(w, num_frames=8)) for w in widths) == 22_656


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown variant 'v11'"):
        CompactGlobalDescriptor(8, variant="v11")
    block = CompactGlobalDescriptor(8, num_frames=4, share_temporal=False)
    with pytest.raises(ValueError, match="num_frames=4, got an input with T=2"):
        block(torch.randn(1, 8, 2, 3, 3))


@pytest.mark.parametrize("nonlinear, bias", [(False, True), (True, False), (False, False)])
def test_official_switches_nonlinear_and_bias(nonlinear, bias):
    """v10's explicit form with the tanh and the biases switched on or off, at T = 1."""
    c = 8
    block = CompactGlobalDescriptor(c, nonlinear=nonlinear, bias=bias).double()
    _randomize(block, seed=4)
    names = [name for name, _ in block.named_parameters()]
    assert names == (["w0", "b0", "w1", "b1", "w2", "b2"] if bias else ["w0", "w1", "w2"])
    p = {k: _params(block, k) if k in names else torch.zeros(c, dtype=torch.float64)
         for k in ("w0", "b0", "w1", "b1", "w2", "b2")}
    act = torch.tanh if nonlinear else (lambda v: v)
    x = torch.randn(2, c, 1, 4, 4, dtype=torch.float64)
    avg, mx = x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))
    s = torch.softmax(avg, dim=1)
    a = act((avg @ p["w0"])[:, None] * s + p["b0"])
    m = act((mx @ p["w1"])[:, None] * s + p["b1"])
    z = act((m @ p["w2"])[:, None] * a + p["b2"])
    torch.testing.assert_close(block(x), x * (1 + z)[:, :, None, None, None], rtol=1e-10, atol=1e-10)


def test_config_reads_the_switches():
    from video_gc.config import load_config
    from video_gc.models.blocks import build_context_block

    cfg = load_config(None, ["CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", "[[0], [], [], []]",
                             "CONTEXT.CGD.NONLINEAR", "False", "CONTEXT.CGD.BIAS", "False"])
    block = build_context_block(cfg.CONTEXT, 16, 2)
    assert not block.nonlinear and sum(p.numel() for p in block.parameters()) == 3 * 16
    default = build_context_block(load_config(None, ["CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION",
                                                     "[[0], [], [], []]"]).CONTEXT, 16, 2)
    assert default.nonlinear and sum(p.numel() for p in default.parameters()) == 6 * 16
