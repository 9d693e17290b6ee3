"""build_context_block from the CONTEXT config section, and gradients through every block."""

import pytest
import torch
from torch import nn

from video_gc.config import get_cfg
from video_gc.models.blocks import (
    CompactGlobalDescriptor,
    GlobalContextBlock,
    NonLocalBlock,
    NormalizationAttention,
    build_context_block,
)


def _context(type_, **gc):
    cfg = get_cfg()
    cfg.CONTEXT.TYPE = type_
    for key, value in gc.items():
        setattr(cfg.CONTEXT.GC, key, value)
    return cfg.CONTEXT


def _hidden(block: GlobalContextBlock):
    return block.transform.conv_v1.out_channels if block.hidden else None


def test_presets_and_ratios():
    assert build_context_block(_context("none"), 64, 8) is None
    gc = build_context_block(_context("gc", RATIO=0.125), 64, 8)
    assert (gc.pooling, _hidden(gc), gc.fusion) == ("att", 8, "add")
    assert any(isinstance(m, nn.LayerNorm) for m in gc.modules())
    snl = build_context_block(_context("snl"), 64, 8)
    assert snl.hidden is None and snl.transform.conv_v.weight.shape[:2] == (64, 64)
    # SE keeps its paper's r = 16 whatever CONTEXT.GC.RATIO says.
    se = build_context_block(_context("se", RATIO=0.5), 64, 8)
    assert (se.pooling, _hidden(se), se.fusion) == ("avg", 4, "mul")
    assert not any(isinstance(m, nn.LayerNorm) for m in se.modules())
    avg_add = build_context_block(_context("avg_add", RATIO=0.5), 64, 8)
    assert (avg_add.pooling, _hidden(avg_add), avg_add.fusion) == ("avg", 32, "add")
    att_mul = build_context_block(_context("att_mul"), 64, 8)
    assert (att_mul.pooling, _hidden(att_mul), att_mul.fusion) == ("att", 16, "mul")


def test_custom_reads_every_gc_key():
    ctx = _context("custom", RATIO=0.5, POOLING="avg", TRANSFORM="bottleneck", LAYER_NORM=False, FUSION="mul")
    block = build_context_block(ctx, 32, 4)
    assert (block.pooling, _hidden(block), block.fusion) == ("avg", 16, "mul")
    assert not any(isinstance(m, nn.LayerNorm) for m in block.modules())
    conv = build_context_block(_context("custom", TRANSFORM="conv"), 32, 4)
    assert conv.hidden is None


def test_cgd_and_na():
    ctx = _context("cgd")
    ctx.CGD.VARIANT = "v7"
    ctx.CGD.SHARE_TEMPORAL = False
    ctx.CGD.ZERO_INIT = True
    block = build_context_block(ctx, 16, 4)
    assert isinstance(block, CompactGlobalDescriptor)
    assert (block.variant, block.num_frames, block.share_temporal, block.zero_init) == ("v7", 4, False, True)
    assert sum(p.numel() for p in block.parameters()) == 2 * 16 * 4
    na_ctx = _context("na")
    na_ctx.NA.EPS = 1e-3
    na = build_context_block(na_ctx, 16, 4)
    assert isinstance(na, NormalizationAttention) and na.eps == 1e-3


def test_unknown_type_names_key_and_choices():
    with pytest.raises(ValueError, match=r"CONTEXT.TYPE: invalid value 'cbam'; allowed values: none, custom, gc"):
        build_context_block(_context("cbam"), 16, 4)


def _all_blocks():
    dim, frames = 16, 2
    blocks = {f"nl_{i}": NonLocalBlock(dim, instantiation=i) for i in
              ("gaussian", "embedded_gaussian", "dot_product", "concatenation")}
    blocks.update({f"gcnet_{p}": GlobalContextBlock.preset(p, dim) for p in ("gc", "snl", "se", "avg_add", "att_mul")})
    blocks.update({f"cgd_v{i}": CompactGlobalDescriptor(dim, frames, variant=f"v{i}") for i in range(1, 11)})
    blocks["cgd_unshared"] = CompactGlobalDescriptor(dim, frames, share_temporal=False)
    blocks["na"] = NormalizationAttention(dim)
    return blocks


# Biases whose gradient is exactly zero by construction: a softmax is shift-invariant,
# so W_k's bias in attention pooling (counted in GCNet's parameter formula) and phi's
# bias in the embedded Gaussian (theta_i . b_phi is constant over the keys) cannot learn.
SHIFT_INVARIANT = {"conv_k.bias", "nl_embedded_gaussian:conv_phi.bias"}


@pytest.mark.parametrize("name", list(_all_blocks()))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    # Eval mode: a training-mode BN subtracts the batch mean, which cancels the biases of
    # conv_out (and conv_g under a softmax) exactly.
    block = _all_blocks()[name].double().eval()
    # The zero-started parameters (NL output gamma, GC last conv, NA gamma) made non-zero,
    # so that nothing downstream of them is cut off; the bottleneck's ReLU kept active.
    with torch.no_grad():
        if isinstance(block, NonLocalBlock):
            block.bn.weight.fill_(1.0)
        if isinstance(block, GlobalContextBlock):
            nn.init.normal_(block.transform[-1].weight, std=0.1)
            if block.hidden is not None:
                block.transform[0].bias.fill_(1.0)
        if isinstance(block, NormalizationAttention):
            block.gamma.fill_(0.5)
    x = torch.randn(2, 16, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    out = block(x)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{name}: {pname} is not in the graph"
        largest = p.grad.abs().max().item()
        if pname in SHIFT_INVARIANT or f"{name}:{pname}" in SHIFT_INVARIANT:
            assert largest < 1e-10
        else:
            assert largest > 1e-6, f"{name}: no gradient reaches {pname}"
    assert x.grad.abs().sum() > 0


IDENTITY_AT_INIT = [n for n in _all_blocks() if n.startswith("nl_") or n in ("gcnet_gc", "gcnet_snl", "gcnet_avg_add")]


@pytest.mark.parametrize("name", list(_all_blocks()))
def test_reset_parameters_restores_the_start(name):
    torch.manual_seed(0)
    block = _all_blocks()[name].eval()
    x = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.rand_like(p) + 0.5)
    perturbed = [p.detach().clone() for p in block.parameters()]
    assert not torch.equal(block(x), x)
    block.reset_parameters()
    for p, q in zip(block.parameters(), perturbed):
        assert not torch.equal(p, q)
    if name in IDENTITY_AT_INIT:
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    if isinstance(block, NormalizationAttention):
        assert (block.gamma.item(), block.beta.item()) == (0.0, 1.0)
    if isinstance(block, CompactGlobalDescriptor):
        biases = [p for n, p in block.named_parameters() if n.startswith("b")]
        assert all(torch.count_nonzero(b) == 0 for b in biases)
