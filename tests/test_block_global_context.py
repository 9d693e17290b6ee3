"""GlobalContextBlock: GCNet Eq. 2-5, the presets, inits and FLOP counting."""

import pytest
import torch
from torch import nn

from video_gc.models.blocks import GlobalContextBlock

PRESET_NAMES = ("gc", "snl", "se", "avg_add", "att_mul")


PRESET_STEPS = {
    "gc": ("att", "bottleneck", True, "add"),
    "snl": ("att", "conv", False, "add"),
    "se": ("avg", "bottleneck", False, "mul"),
    "avg_add": ("avg", "bottleneck", True, "add"),
    "att_mul": ("att", "bottleneck", True, "mul"),
}
LN_EPS = 1e-5  # nn.LayerNorm's default, which the GC transform uses


def _reference_params(dim: int, hidden: int, steps, seed: int = 0) -> dict:
    """The reference's own random parameters for a block of these steps, by state-dict key.

    The hand computations read only this table (never the module), so a layer that the
    block lost or skips shows up as a wrong number.
    """
    pooling, transform, layer_norm, _ = steps
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * 0.3

    params = {}
    if pooling == "att":
        params.update({"conv_k.weight": draw(1, dim, 1, 1, 1), "conv_k.bias": draw(1)})
    if transform == "conv":
        params.update({"transform.conv_v.weight": draw(dim, dim, 1, 1, 1), "transform.conv_v.bias": draw(dim)})
    else:
        params.update({"transform.conv_v1.weight": draw(hidden, dim, 1, 1, 1), "transform.conv_v1.bias": draw(hidden)})
        if layer_norm:
            params.update({"transform.ln.weight": draw(hidden, 1, 1, 1), "transform.ln.bias": draw(hidden, 1, 1, 1)})
        params.update({"transform.conv_v2.weight": draw(dim, hidden, 1, 1, 1), "transform.conv_v2.bias": draw(dim)})
    return params


def _load(block: nn.Module, params: dict) -> None:
    """Every parameter of the block is set from the table (extra table entries are ignored)."""
    missing, _ = block.load_state_dict(params, strict=False)
    assert not missing, missing


def _mat(params: dict, name: str):
    return params[f"{name}.weight"].flatten(1), params[f"{name}.bias"]


def _positions(x: torch.Tensor, b: int) -> torch.Tensor:
    """Feature vectors of sample b as [Np, C] in (t, h, w) order."""
    return x[b].reshape(x.shape[1], -1).t()


def _alpha(params: dict, xs: torch.Tensor) -> torch.Tensor:
    wk, bk = _mat(params, "conv_k")
    logits = torch.stack([wk[0] @ xj + bk[0] for xj in xs])
    e = torch.exp(logits - logits.max())
    return e / e.sum()


def _layer_norm(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mu = v.mean()
    var = ((v - mu) ** 2).mean()
    return (v - mu) / torch.sqrt(var + LN_EPS) * weight.flatten() + bias.flatten()


def _expected(params: dict, x: torch.Tensor, pooling, transform, layer_norm, fusion):
    """Eq. 4 step by step for one sample at a time."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        xs = _positions(x, b)
        if pooling == "att":
            alpha = _alpha(params, xs)
        else:
            alpha = torch.full((xs.shape[0],), 1.0 / xs.shape[0], dtype=x.dtype)
        ctx = sum(a * xj for a, xj in zip(alpha, xs))
        if transform == "conv":
            w, bias = _mat(params, "transform.conv_v")
            delta = w @ ctx + bias
        else:
            w1, b1 = _mat(params, "transform.conv_v1")
            hidden = w1 @ ctx + b1
            if layer_norm:
                hidden = _layer_norm(hidden, params["transform.ln.weight"], params["transform.ln.bias"])
            w2, b2 = _mat(params, "transform.conv_v2")
            delta = w2 @ torch.relu(hidden) + b2
        view = delta.view(-1, 1, 1, 1)
        out[b] = x[b] + view if fusion == "add" else x[b] * torch.sigmoid(view)
    return out


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_match_eq4_by_hand(name):
    block = GlobalContextBlock.preset(name, 16, ratio=0.25).double()
    params = _reference_params(16, 4, PRESET_STEPS[name])  # ratio 1/4 for every preset here
    _load(block, params)
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), _expected(params, x, *PRESET_STEPS[name]), rtol=1e-10, atol=1e-10)


def test_snl_eq3_equals_eq2_literally():
    """GCNet Eq. 2 applies W_v at every position before pooling; Eq. 3 pools first."""
    block = GlobalContextBlock.preset("snl", 8).double()
    params = _reference_params(8, 0, PRESET_STEPS["snl"], seed=5)
    _load(block, params)
    x = torch.randn(2, 8, 2, 3, 3, dtype=torch.float64)
    w_v, b_v = _mat(params, "transform.conv_v")
    expected = torch.empty_like(x)
    for b in range(2):
        xs = _positions(x, b)
        alpha = _alpha(params, xs)
        for i, xi in enumerate(xs):
            zi = xi + sum(alpha[j] * (w_v @ xs[j] + b_v) for j in range(xs.shape[0]))
            expected[b].reshape(8, -1)[:, i] = zi
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ("gc", "snl", "avg_add"))
def test_add_fusion_is_identity_at_init(name):
    block = GlobalContextBlock.preset(name, 32)
    x = torch.randn(2, 32, 2, 5, 5)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    last = block.transform[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0


def test_se_at_init_matches_closed_form_and_keeps_default_init():
    torch.manual_seed(0)
    block = GlobalContextBlock.preset("se", 64)
    assert block.transform.conv_v1.out_channels == 4  # SE paper's r = 16
    assert torch.count_nonzero(block.transform.conv_v2.weight) > 0  # no zero init
    x = torch.randn(2, 64, 2, 3, 3)
    init = block.state_dict()
    w1, b1 = _mat(init, "transform.conv_v1")
    w2, b2 = _mat(init, "transform.conv_v2")
    squeeze = x.mean(dim=(2, 3, 4))
    excite = torch.sigmoid(torch.relu(squeeze @ w1.t() + b1) @ w2.t() + b2)
    torch.testing.assert_close(block(x), x * excite[:, :, None, None, None])


def test_attention_weights_sum_to_one_over_all_positions():
    block = GlobalContextBlock.preset("gc", 16)
    _load(block, {k: v.float() for k, v in _reference_params(16, 4, PRESET_STEPS["gc"]).items()})
    captured = []
    block.attention_probe.register_forward_hook(lambda m, i, o: captured.append(o))
    x = torch.randn(3, 16, 4, 5, 6) * 3
    block(x)
    alpha = captured[0]
    assert alpha.shape == (3, 1, 4 * 5 * 6)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(dim=-1), torch.ones(3, 1))
    # A softmax over all T*H*W (not per frame): the weights of one frame do not sum to 1.
    assert not torch.allclose(alpha.view(3, 4, 30).sum(-1), torch.full((3, 4), 1.0))


def test_exact_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    c, p = 512, 128
    assert count(GlobalContextBlock.preset("gc", c, ratio=0.25)) == 2 * c * p + 2 * c + 3 * p + 1 == 132_481
    assert count(GlobalContextBlock.preset("snl", c)) == c * c + 2 * c + 1
    assert count(GlobalContextBlock.preset("se", c)) == 2 * c * 32 + c + 32
    # Slow R50 with the GCNet paper's placement: +5 GC (2 at C=512, 3 at C=1024) and +5 SNL.
    base = 32_454_096
    gc5 = 2 * count(GlobalContextBlock.preset("gc", 512)) + 3 * count(GlobalContextBlock.preset("gc", 1024))
    snl5 = 2 * count(GlobalContextBlock.preset("snl", 512)) + 3 * count(GlobalContextBlock.preset("snl", 1024))
    assert base + gc5 == 34_300_373
    assert base + snl5 == 36_132_309


def test_custom_steps_and_bad_choice():
    block = GlobalContextBlock(16, pooling="avg", transform="conv", fusion="mul")
    assert not hasattr(block, "conv_k") and block.hidden is None
    assert torch.count_nonzero(block.transform.conv_v.weight) > 0  # mul keeps the default init
    no_ln = GlobalContextBlock(16, layer_norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in no_ln.modules())
    with pytest.raises(ValueError, match="unknown fusion 'concat'; allowed values: add, mul"):
        GlobalContextBlock(16, fusion="concat")
    with pytest.raises(ValueError, match="unknown preset 'cbam'"):
        GlobalContextBlock.preset("cbam", 16)


def test_fvcore_counts_the_attention_pooling_matmul():
    from fvcore.nn import FlopCountAnalysis

    n, c, t, h, w = 1, 32, 2, 4, 4
    block = GlobalContextBlock.preset("snl", c)
    flops = FlopCountAnalysis(block, torch.randn(n, c, t, h, w))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = flops.by_operator()
    assert by_op["bmm"] == n * c * t * h * w
    assert by_op["conv"] == n * (c * t * h * w + c * c)


def _branch(params: dict, fusion: str) -> dict:
    """The reference's table for one branch of a two-fusion block, keyed as a one-fusion block."""
    return {k.replace(f"transform_{fusion}.", "transform."): v for k, v in params.items()
            if not k.startswith("transform_") or k.startswith(f"transform_{fusion}.")}


def test_both_fusions_multiply_then_add_each_with_its_own_transform():
    block = GlobalContextBlock(16, fusion=["add", "mul"]).double()  # applied as mul, then add
    assert block.fusion == "mul+add"
    mul = _reference_params(16, 4, PRESET_STEPS["att_mul"], seed=1)
    add = {k: v for k, v in _reference_params(16, 4, PRESET_STEPS["gc"], seed=2).items() if k.startswith("transform.")}
    params = {k.replace("transform.", "transform_mul."): v for k, v in mul.items()}
    params.update({k.replace("transform.", "transform_add."): v for k, v in add.items()})
    _load(block, params)
    x = torch.randn(2, 16, 2, 3, 4, dtype=torch.float64)
    scaled = _expected(_branch(params, "mul"), x, *PRESET_STEPS["att_mul"])  # x * sigmoid(delta_mul)
    delta_add = _expected(_branch(params, "add"), x, *PRESET_STEPS["gc"]) - x
    torch.testing.assert_close(block(x), scaled + delta_add, rtol=1e-10, atol=1e-10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Two bottleneck transforms with LayerNorm (2CP + C + 3P each) and W_k (C + 1).
    assert count(block) == 2 * (2 * 16 * 4 + 16 + 3 * 4) + 16 + 1


@pytest.mark.parametrize("zero_init, zeroed", [("add", {"add"}), ("all", {"add", "mul"}), ("none", set())])
def test_zero_init_choice_per_fusion_branch(zero_init, zeroed):
    block = GlobalContextBlock(16, fusion=("mul", "add"), zero_init=zero_init)
    for fusion, transform in block.branches():
        last = transform[-1]
        is_zero = torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
        assert bool(is_zero) == (fusion in zeroed), fusion
    x = torch.randn(2, 16, 2, 3, 3)
    if zero_init == "all":  # GCNet's released init: the mul branch starts at sigmoid(0) = 1/2
        torch.testing.assert_close(block(x), x * 0.5)


def test_config_fusion_list_and_zero_init():
    from video_gc.config import load_config
    from video_gc.models.blocks import build_context_block

    base = ["CONTEXT.TYPE", "custom", "CONTEXT.LOCATION", "[[0], [], [], []]"]
    both = load_config(None, base + ["CONTEXT.GC.FUSION", "['mul', 'add']", "CONTEXT.GC.ZERO_INIT", "all"])
    block = build_context_block(both.CONTEXT, 16, 2)
    assert block.fusion == "mul+add" and block.zero_init == "all"
    # A bare name still loads, as a list of one; presets read the init choice too.
    assert load_config(None, base + ["CONTEXT.GC.FUSION", "mul"]).CONTEXT.GC.FUSION == ["mul"]
    gc = load_config(None, ["CONTEXT.TYPE", "att_mul", "CONTEXT.LOCATION", "[[0], [], [], []]",
                            "CONTEXT.GC.ZERO_INIT", "all"])
    assert torch.count_nonzero(build_context_block(gc.CONTEXT, 16, 2).transform[-1].weight) == 0
    from video_gc.config import ConfigError

    with pytest.raises(ConfigError, match="CONTEXT.GC.FUSION: invalid value \\['add', 'add'\\]; allowed values: "
                                          "a list of distinct values from add, mul"):
        load_config(None, base + ["CONTEXT.GC.FUSION", "['add', 'add']"])
