"""Video ResNet backbone: arch tables, widths, state-dict names, inits, block placement."""

import pytest
import torch
from torch import nn

from video_gc.config import ConfigError, get_cfg, load_config
from video_gc.models import build_model, init_weights
from video_gc.models.arch import stage_num_frames, stage_temporal_kernels

NL5 = "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]"
ALL_BLOCKS = "[[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]"


def small(*opts, width=4, frames=8):
    """A narrow model built from the defaults plus KEY VALUE overrides."""
    cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", str(width), "DATA.NUM_FRAMES", str(frames), *map(str, opts)])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def stage_outputs(model, x):
    """Output shapes of stem, res2..res5 for input x."""
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
             for name in ("stem", "res2", "res3", "res4", "res5")]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize(
    "arch, frames, temporal",
    [
        ("slow", 8, (8, 8, 8, 8)),
        ("c2d", 8, (8, 4, 4, 4)),
        ("c2d_nopool", 8, (8, 8, 8, 8)),
        ("c2d_nl32", 32, (8, 4, 4, 4)),
        ("i3d", 8, (8, 4, 4, 4)),
    ],
)
def test_arch_temporal_sizes_per_stage(arch, frames, temporal):
    _, model = small("MODEL.ARCH", arch, frames=frames)
    shapes = stage_outputs(model, torch.randn(1, 3, frames, 64, 64))
    got = tuple(shapes[f"res{s}"][2] for s in range(2, 6))
    assert got == temporal
    assert stage_num_frames(arch, frames) == temporal
    # Spatial: stem /4, then /2 per stage from res3 (64 -> 16, 16, 8, 4, 2).
    assert [shapes[f"res{s}"][3] for s in range(2, 6)] == [16, 8, 4, 2]
    assert [shapes[f"res{s}"][1] for s in range(2, 6)] == [16, 32, 64, 128]


def test_c2d_nl32_stem_halves_time_twice():
    _, model = small("MODEL.ARCH", "c2d_nl32", frames=32)
    assert model.stem.conv.stride == (2, 2, 2)
    assert model.stem.pool.kernel_size == (2, 3, 3) and model.stem.pool.stride == (2, 2, 2)
    assert stage_outputs(model, torch.randn(1, 3, 32, 64, 64))["stem"][2] == 8


def test_temporal_kernels_follow_arch_table_and_num_block_temp_kernel():
    _, slow = small("MODEL.ARCH", "slow")
    kernels = [[blk.branch2.a.kernel_size[0] for blk in getattr(slow, f"res{s}")] for s in range(2, 6)]
    assert kernels == [[1] * 3, [1] * 4, [3] * 6, [3] * 3]
    _, slow_partial = small("MODEL.ARCH", "slow", "RESNET.NUM_BLOCK_TEMP_KERNEL", "[[3], [4], [2], [1]]")
    assert [blk.branch2.a.kernel_size[0] for blk in slow_partial.res4] == [3, 3, 1, 1, 1, 1]
    assert [blk.branch2.a.kernel_size[0] for blk in slow_partial.res5] == [3, 1, 1]
    _, i3d = small("MODEL.ARCH", "i3d")
    assert i3d.stem.conv.kernel_size == (5, 7, 7)
    assert [blk.branch2.a.kernel_size[0] for blk in i3d.res3] == [3, 1, 3, 1]
    assert [blk.branch2.a.kernel_size[0] for blk in i3d.res5] == [1, 3, 1]
    assert stage_temporal_kernels((3, 1), 6, 4) == [3, 1, 3, 1, 1, 1]


@pytest.mark.parametrize("arch, params", [("slow", 32_454_096), ("c2d", 24_327_632), ("c2d_nopool", 24_327_632)])
def test_full_width_param_counts(arch, params):
    cfg = load_config(None, ["MODEL.ARCH", arch])
    assert n_params(build_model(cfg)) == params


def test_depth_101_width_groups_and_stride_options():
    _, r101 = small("RESNET.DEPTH", 101)
    assert [len(getattr(r101, f"res{s}")) for s in range(2, 6)] == [3, 4, 23, 3]
    _, narrow = small(width=8)
    assert narrow.stem.conv.out_channels == 8 and narrow.head.projection.in_features == 8 * 32
    _, grouped = small("RESNET.NUM_GROUPS", 2)
    assert grouped.res3[0].branch2.b.groups == 2 and grouped.res3[0].branch2.b.out_channels == 2 * 4 * 2
    _, s1x1 = small("RESNET.STRIDE_1X1", True)
    assert s1x1.res3[0].branch2.a.stride == (1, 2, 2) and s1x1.res3[0].branch2.b.stride == (1, 1, 1)
    _, default = small()
    assert default.res3[0].branch2.a.stride == (1, 1, 1) and default.res3[0].branch2.b.stride == (1, 2, 2)


def test_state_dict_names_match_contract():
    _, model = small(
        "NONLOCAL.LOCATION", NL5, "NONLOCAL.INSTANTIATION", "softmax",
        "CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [1], [], []]",
    )
    keys = set(model.state_dict())
    expected = {
        "stem.conv.weight", "stem.bn.weight", "res2.0.branch1.weight", "res2.0.branch1_bn.running_var",
        "res3.1.branch2.a.weight", "res3.1.branch2.a_bn.weight", "res3.1.branch2.b_bn.bias",
        "res3.1.branch2.c.weight", "res3.1.branch2.c_bn.weight",
        "res3.1.nonlocal.conv_theta.weight", "res3.1.nonlocal.conv_theta.bias", "res3.1.nonlocal.conv_phi.weight",
        "res3.1.nonlocal.conv_g.weight", "res3.1.nonlocal.conv_out.weight", "res3.1.nonlocal.bn.weight",
        "res3.1.context.conv_k.weight", "head.projection.weight", "head.projection.bias",
    }
    assert expected <= keys
    assert not any("branch1" in k for k in keys if k.startswith("res3.1."))
    assert not any(k.startswith("res3.0.nonlocal") for k in keys)
    assert all(not k.startswith("pathway") for k in keys)
    _, cgd = small("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", "[[0], [], [], []]")
    assert any(k.startswith("res2.0.branch2.cgd.") for k in cgd.state_dict())


def test_backbone_init():
    cfg, model = small("MODEL.FC_INIT_STD", 0.01, width=16)
    conv = model.res4[0].branch2.a  # 3x1x1: fan_out = 64 * 3
    expected = (2.0 / (conv.out_channels * 3)) ** 0.5
    assert abs(conv.weight.std().item() - expected) < 0.1 * expected
    for stage in (model.res2, model.res3, model.res4, model.res5):
        for blk in stage:
            assert torch.all(blk.branch2.c_bn.weight == 0)
            assert torch.all(blk.branch2.a_bn.weight == 1) and torch.all(blk.branch2.a_bn.bias == 0)
    fc = model.head.projection
    assert torch.all(fc.bias == 0) and abs(fc.weight.std().item() - 0.01) < 0.002
    _, no_zero = small("RESNET.ZERO_INIT_FINAL_BN", False)
    assert torch.all(no_zero.res3[1].branch2.c_bn.weight == 1)


def test_zero_init_final_bn_makes_identity_blocks():
    _, model = small()
    model.eval()
    x = torch.rand(2, 16, 4, 8, 8)  # non-negative, like a ReLU output
    with torch.no_grad():
        assert torch.allclose(model.res2[1](x), x)


@pytest.mark.parametrize("kind", ["gc", "att_mul", "se", "na", "cgd"])
def test_init_pass_leaves_context_blocks_alone(kind):
    _, model = small("CONTEXT.TYPE", kind, "CONTEXT.LOCATION", ALL_BLOCKS, "NONLOCAL.LOCATION", NL5)
    block_names = ("context", "nonlocal", "cgd")
    before = {k: v.clone() for k, v in model.state_dict().items() if any(f".{n}." in k for n in block_names)}
    stem_before = model.stem.conv.weight.clone()
    torch.manual_seed(123)
    init_weights(model, fc_init_std=0.01, zero_init_final_bn=True)
    after = model.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(stem_before, model.stem.conv.weight)  # the backbone itself was re-initialised


def _record(module, store, name, what="input"):
    def hook(mod, inputs, output):
        store[name] = (inputs[0] if what == "input" else output).detach().clone()
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("position, source", [("after_conv1", "a"), ("after_conv2", "b")])
def test_cgd_position_inside_branch2(position, source):
    _, model = small("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL_BLOCKS, "CONTEXT.POSITION", position)
    blk = model.res3[1]
    seen = {}
    hooks = [_record(blk.branch2.cgd, seen, "cgd_in"), _record(getattr(blk.branch2, source), seen, "conv", "output"),
             _record(getattr(blk.branch2, source + "_bn"), seen, "bn_in"), _record(blk.branch2.cgd, seen, "cgd_out", "output")]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 32, 32))
    assert torch.equal(seen["cgd_in"], seen["conv"])
    assert torch.equal(seen["bn_in"], seen["cgd_out"])
    assert blk.branch2.cgd.dim == blk.branch2.a.out_channels  # dim_inner
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("position", ["after1x1", "afterAdd"])
def test_context_position_around_residual_add(position):
    _, model = small("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ALL_BLOCKS, "CONTEXT.POSITION", position,
                     "NONLOCAL.LOCATION", NL5)
    blk = model.res3[1]
    seen = {}
    _record(blk.context, seen, "ctx_in")
    _record(blk.branch2.c_bn, seen, "c_bn_out", "output")
    _record(blk.relu, seen, "relu_out", "output")
    _record(getattr(blk, "nonlocal"), seen, "nl_in")
    _record(blk.context, seen, "ctx_out", "output")
    _record(blk, seen, "block_out", "output")
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 32, 32))
    if position == "after1x1":
        assert torch.equal(seen["ctx_in"], seen["c_bn_out"])
        assert torch.equal(seen["nl_in"], seen["relu_out"])
    else:
        assert torch.equal(seen["ctx_in"], seen["relu_out"])
        assert torch.equal(seen["nl_in"], seen["ctx_out"])
    assert seen["ctx_in"].shape[1] == blk.branch2.c.out_channels


def test_context_blocks_get_the_stage_temporal_size():
    # Unshared CGD holds 6 * C * T parameters: T must be the temporal size at the stage.
    _, model = small("MODEL.ARCH", "c2d_nl32", "CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL_BLOCKS,
                     "CONTEXT.CGD.SHARE_TEMPORAL", False, frames=32)
    assert [getattr(model, f"res{s}")[0].branch2.cgd.num_frames for s in range(2, 6)] == [8, 4, 4, 4]
    _, slow = small("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL_BLOCKS, "CONTEXT.CGD.SHARE_TEMPORAL", False)
    assert {getattr(slow, f"res{s}")[0].branch2.cgd.num_frames for s in range(2, 6)} == {8}


@pytest.mark.parametrize("crop", [32, 48, 80])
def test_head_works_at_any_crop_and_returns_logits(crop):
    cfg, model = small("MODEL.NUM_CLASSES", 7)
    model.eval()
    x = torch.randn(2, 3, 8, crop, crop)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (2, 7) and feats.shape == (2, 4 * 32)
    assert not torch.allclose(logits.sum(1), torch.ones(2))  # logits, not probabilities
    assert torch.allclose(model.head.projection(feats), logits, atol=1e-6)


@pytest.mark.parametrize("kind", ["gc", "snl", "se", "na", "cgd"])
def test_gradient_reaches_every_parameter(kind):
    _, model = small("CONTEXT.TYPE", kind, "CONTEXT.LOCATION", "[[0], [1], [1], [0]]", "NONLOCAL.LOCATION",
                     "[[[]], [[1]], [[]], [[]]]", "NONLOCAL.INSTANTIATION", "embedded_gaussian", "MODEL.ARCH", "c2d",
                     width=8)  # SE's r = 16 needs C >= 32 for more than one hidden unit
    # Move every parameter off its (often zero) init so no gradient is zero by construction.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


def test_sync_batchnorm_and_short_clip_errors():
    _, model = small("BN.NORM_TYPE", "sync_batchnorm")
    assert isinstance(model.stem.bn, nn.SyncBatchNorm)
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ARCH", "c2d_nl32", "DATA.NUM_FRAMES", 2])
    with pytest.raises(ConfigError, match="DATA.NUM_FRAMES.*c2d_nl32"):
        build_model(cfg)
