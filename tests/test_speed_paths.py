"""Fast inference paths give the reference path's results."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_gc.config import load_config
from video_gc.inference import FusedConv3d, fuse_for_inference, prepare_for_inference, resolve_mode
from video_gc.inference.absorb import GateEpilogue, absorber_for
from video_gc.inference.bn_fold import batchnorm_affine, fold_batchnorm
from video_gc.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW = os.path.join(REPO, "configs/kinetics/SLOW_8x8_R50.yaml")
C2D = os.path.join(REPO, "configs/kinetics/C2D_8x8_R50.yaml")
NARROW = ["RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "10", "DATA.NUM_FRAMES", "4"]
ALL = "[[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]"
ODD = "[[], [1, 3], [1, 3, 5], []]"


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random, so no fused op hides behind a zero init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p + 0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


def _model(config=SLOW, opts=()):
    torch.manual_seed(0)
    return _randomise(build_model(load_config(config, NARROW + list(opts))))


def _clips(n=2, size=32, seed=1):
    return torch.randn(n, 3, 4, size, size, generator=torch.Generator().manual_seed(seed))


VARIANTS = {
    "slow": (SLOW, ()),
    "c2d_res2_pool": (C2D, ()),
    "nl5": (SLOW, ("NONLOCAL.LOCATION", "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]", "NONLOCAL.INSTANTIATION", "softmax")),
    "gc_all": (SLOW, ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ALL)),
    "gc_after_add": (SLOW, ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ODD, "CONTEXT.POSITION", "afterAdd")),
    "snl": (SLOW, ("CONTEXT.TYPE", "snl", "CONTEXT.LOCATION", ODD)),
    "se": (SLOW, ("CONTEXT.TYPE", "se", "CONTEXT.LOCATION", ALL)),
    "cgd_conv1": (SLOW, ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL)),
    "cgd_conv2": (SLOW, ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL, "CONTEXT.POSITION", "after_conv2")),
    "na": (SLOW, ("CONTEXT.TYPE", "na", "CONTEXT.LOCATION", ALL)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_modes_match_reference(variant):
    config, opts = VARIANTS[variant]
    model = _model(config, opts)
    x = _clips()
    with torch.inference_mode():
        ref = model(x)
        for mode in ("fused", "channels_last", "fp32"):
            out = prepare_for_inference(model, mode)(x)
            assert out.dtype == torch.float32
            assert (out - ref).abs().max() < 1e-4 * max(1.0, ref.abs().max().item()), mode


def test_fusion_removes_every_foldable_batchnorm_and_fuses_relu_and_add():
    model = _model()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    convs = [m for m in fused.modules() if isinstance(m, FusedConv3d)]
    assert len(convs) == sum(isinstance(m, nn.Conv3d) for m in model.modules())
    # Per bottleneck: a and b fused with ReLU, and one conv (c or branch1) with the add + ReLU.
    code = fused.code
    assert "relu" not in code and " + " not in code and "bn" not in code
    assert sum(c.relu for c in convs) == 1 + 3 * 16


def test_cgd_takes_over_the_bn_and_relu_after_it():
    model = _model(SLOW, ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL))
    fused = fuse_for_inference(model)
    # a_bn follows the CGD, not the conv: it is not folded into conv a but into the CGD (16 blocks).
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    gates = [m for m in fused.modules() if isinstance(m, GateEpilogue)]
    assert len(gates) == 16 and all(g.relu for g in gates)
    assert not any(isinstance(m, GateEpilogue) for m in model.modules())


def test_original_model_is_untouched():
    model = _model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_inference(model, "channels_last")
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)


@pytest.mark.parametrize("groups,stride,dilation", [(1, 1, 1), (2, 2, 1), (1, 1, 2)])
def test_fused_conv_equals_conv_bn_add_relu_on_both_paths(groups, stride, dilation):
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv3d(8, 16, (3, 3, 3), stride=(1, stride, stride), padding=(1, dilation, dilation),
                     dilation=(1, dilation, dilation), groups=groups, bias=False)
    bn = nn.BatchNorm3d(16).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.normal_(generator=gen)
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(2, 8, 4, 10, 10, generator=gen)
    with torch.no_grad():
        y = bn(conv(x))
    residual = torch.randn(y.shape, generator=gen)
    fused = FusedConv3d(conv, bn)
    fused.relu = True
    expected = torch.relu(y + residual)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        xl = x.contiguous(memory_format=layout)
        with torch.inference_mode():  # oneDNN post-op path on CPU
            fast = fused(xl, residual)
        generic = fused(xl.requires_grad_(), residual)  # conv + bias + add + ReLU path
        torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(generic.detach(), expected, atol=1e-5, rtol=1e-5)


def test_bf16_is_close_to_fp32_and_agrees_on_top1():
    model = _model()
    x = _clips(n=16, seed=3)
    with torch.inference_mode():
        ref = prepare_for_inference(model, "fp32")(x)
        out = prepare_for_inference(model, "bf16")(x)
    assert out.dtype == torch.float32
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() < 0.05 * scale
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.8


def test_modes_resolve_per_device_and_reject_impossible_ones():
    assert resolve_mode("best", "cuda").dtype == torch.float16
    assert resolve_mode("channels_last", "cpu").channels_last and not resolve_mode("fused", "cpu").channels_last
    # fp32 takes the faster layout of the device: channels_last_3d for oneDNN, contiguous for cuDNN.
    assert resolve_mode("fp32", "cpu").channels_last == torch.backends.mkldnn.is_available()
    assert not resolve_mode("fp32", "cuda").channels_last and resolve_mode("fp32", "cuda").fuse
    assert not resolve_mode("reference", "cpu").fuse
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_mode("fp16", "cpu")
    with pytest.raises(ValueError, match="allowed values"):
        resolve_mode("fastest", "cpu")


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
@pytest.mark.slow
def test_compile_mode_matches_reference():
    model = _model()
    x = _clips()
    with torch.inference_mode():
        ref = model(x)
        out = prepare_for_inference(model, "compile")(x)
    assert (out - ref).abs().max() < 1e-4 * max(1.0, ref.abs().max().item())


def _run_tool(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_benchmark_tool_json_same_weights_as_pytorchvideo():
    out = _run_tool("tools/benchmark_model.py", "--cfg", C2D, "--json", "--batch", "2", "--train-batch", "2",
                    "--crop", "32", "--frames", "4", "--repeats", "1", "--warmup", "0", "--threads", "1",
                    "--opts", *NARROW)
    result = json.loads(out)
    assert {"ours_clips_per_s", "pytorchvideo_clips_per_s", "ratio", "max_abs_diff"} <= set(result)
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0
    assert result["ours_clips_per_s"] > 0 and result["pytorchvideo_clips_per_s"] > 0
    assert [r["name"] for r in result["rows"]] == ["inference", "train step"]
    # ONNX Runtime ran our exported fp32 model on the same clips, with the same thread count.
    ort = result["onnxruntime"]
    assert ort["provider"] == "CPUExecutionProvider" and ort["threads"] == result["threads"] == 1
    assert ort["max_abs_diff"] < 1e-4 and set(ort["export_max_abs_diff"]) == {"1", "3"}
    assert [(r["name"], r["batch"]) for r in ort["rows"]] == [("onnxruntime", 2)]
    row = ort["rows"][0]
    assert row["onnxruntime_clips_per_s"] > 0 and row["ours_clips_per_s"] == result["ours_clips_per_s"]
    assert row["ratio"] == pytest.approx(row["onnxruntime_ms"] / row["ours_ms"], rel=0.1)


def test_block_overhead_counts_match_block_formulas():
    from video_gc.bench.blocks import DEFAULT_VARIANTS, block_overhead

    rows = block_overhead(SLOW, variants={k: DEFAULT_VARIANTS[k] for k in ("baseline", "GC5", "NA")},
                          crop=32, frames=4, repeats=1, warmup=0, opts=NARROW)
    rows = {r.name: r for r in rows}
    # GC block params 2CP + 2C + 3P + 1 with P = C/4: two in res3 (C = 64), three in res4 (C = 128).
    gc = sum(n * (2 * c * (c // 4) + 2 * c + 3 * (c // 4) + 1) for n, c in ((2, 64), (3, 128)))
    assert rows["GC5"].params - rows["baseline"].params == gc
    assert rows["NA"].params - rows["baseline"].params == 2 * 16
    assert rows["GC5"].flops_overhead_pct > 0 and rows["baseline"].latency_overhead_pct == 0


def test_config_key_lists_every_mode():
    from video_gc.config import allowed_values, get_cfg
    from video_gc.registry import INFERENCE_MODES

    assert allowed_values()["TEST.INFERENCE_MODE"] == INFERENCE_MODES.names()
    assert resolve_mode(get_cfg().TEST.INFERENCE_MODE, "cpu").dtype is None  # the default is exact


def _both_layouts(block, x, probe):
    """(output, probed tensor) of the reference (contiguous) and the channels_last_3d path."""
    seen = []
    probe.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        ref = block(x)
        fast = block(x.contiguous(memory_format=torch.channels_last_3d))
    return (ref, seen[0]), (fast, seen[1])


@pytest.mark.parametrize("preset", ["gc", "snl", "att_mul"])
def test_gc_channels_last_path_equals_reference_conv_path(preset):
    from video_gc.models.blocks import GlobalContextBlock

    torch.manual_seed(0)
    block = GlobalContextBlock.preset(preset, 32).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    x = torch.randn(2, 32, 4, 7, 7)
    (ref, alpha_ref), (fast, alpha_fast) = _both_layouts(block, x, block.attention_probe)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha_fast, alpha_ref, atol=1e-6, rtol=1e-5)
    # The reference itself: alpha = softmax over T*H*W of the 1x1x1 conv W_k.
    expected = torch.softmax(torch.nn.functional.conv3d(x, block.conv_k.weight, block.conv_k.bias).flatten(1), -1)
    torch.testing.assert_close(alpha_ref.squeeze(1), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant,shared", [("v10", True), ("v10", False), ("v5", True)])
def test_cgd_channels_last_path_equals_reference_path(variant, shared):
    from video_gc.models.blocks import CompactGlobalDescriptor

    torch.manual_seed(0)
    block = CompactGlobalDescriptor(16, num_frames=4, variant=variant, share_temporal=shared).eval()
    (ref, gate_ref), (fast, gate_fast) = _both_layouts(block, torch.randn(2, 16, 4, 6, 6), block.gate_probe)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gate_fast, gate_ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(gate_ref, torch.ones_like(gate_ref))  # the gate is not trivially 1


def test_fusion_leaves_shared_convs_and_broadcast_adds_exact():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(4, 4, 1, bias=False)
            self.bn = nn.BatchNorm3d(4)
            self.conv2 = nn.Conv3d(4, 4, 1)
            self.offset = nn.Parameter(torch.randn(1, 4, 1, 1, 1))

        def forward(self, x):
            y = self.bn(self.conv(self.conv(x)))  # one conv called twice: not folded
            return torch.relu(self.conv2(y) + self.offset)  # broadcast add into a fused conv

    model = _randomise(Odd())
    x = torch.randn(2, 4, 3, 5, 5)
    fused = fuse_for_inference(model)
    assert isinstance(fused.conv, nn.Conv3d) and isinstance(fused.conv2, FusedConv3d)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_agreement_on_a_real_synthetic_test_split(tmp_path):
    from video_gc.bench.model import dataset_agreement
    from video_gc.prep.synthetic import make_synthetic_dataset

    summary = make_synthetic_dataset(str(tmp_path), num_classes=2, videos_per_class=4, num_frames=12,
                                     size=(32, 32), verbose=False)
    cfg = load_config(SLOW, NARROW + ["MODEL.NUM_CLASSES", "2", "TEST.NUM_ENSEMBLE_VIEWS", "2",
                                      "TEST.NUM_SPATIAL_CROPS", "1", "TEST.BATCH_SIZE", "2",
                                      "DATA_LOADER.NUM_WORKERS", "0", "DATA.SAMPLING_RATE", "2"])
    result = dataset_agreement(cfg, str(tmp_path), mode="channels_last", crop=32)
    assert result["videos"] == summary["test"] and result["views"] == 2 * summary["test"]
    assert result["view_top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4

    # A trained model's checkpoint instead of random weights: loaded strictly, so a checkpoint
    # of another model is refused rather than half-used.
    from video_gc.engine.checkpoint import save_checkpoint
    from video_gc.utils.io import CheckpointError

    model = _randomise(build_model(cfg))
    path = save_checkpoint(str(tmp_path / "run"), 1, model, cfg=cfg)
    result = dataset_agreement(cfg, str(tmp_path), mode="fused", crop=32, weights=path)
    assert result["view_top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    other = save_checkpoint(str(tmp_path / "other"), 1, build_model(load_config(SLOW, NARROW)), cfg=cfg)
    with pytest.raises(CheckpointError):
        dataset_agreement(cfg, str(tmp_path), mode="fused", crop=32, weights=other)


def _gate_input(dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, dim, 4, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("variant,shared", [("v10", True), ("v10", False), ("v1", True)])
def test_cgd_bn_relu_epilogue_equals_gate_then_bn_then_relu(variant, shared):
    from video_gc.models.blocks import CompactGlobalDescriptor

    torch.manual_seed(0)
    block = CompactGlobalDescriptor(16, num_frames=4, variant=variant, share_temporal=shared).eval()
    bn = _randomise(nn.BatchNorm3d(16), seed=3)
    x = _gate_input()
    with torch.inference_mode():
        ref = torch.relu(bn(block(x)))
    epilogue = GateEpilogue(block, *batchnorm_affine(bn))
    epilogue.relu = True
    with torch.inference_mode():
        x_copy = x.clone()
        fast = epilogue(x_copy)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert fast.data_ptr() == x_copy.data_ptr()  # written in place: no new buffer
    assert (ref == 0).any() and (ref > 0).any()  # the ReLU is exercised
    # With autograd recording, the input is left alone (same numbers, new tensor).
    xg = x.clone().requires_grad_(True)
    out = epilogue(xg)
    torch.testing.assert_close(out.detach(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xg.detach(), x)


def test_gate_epilogue_is_skipped_when_the_input_has_another_reader():
    from video_gc.models.blocks import CompactGlobalDescriptor

    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(4, 8, 1, bias=False)
            self.cgd = CompactGlobalDescriptor(8, num_frames=3)
            self.bn = nn.BatchNorm3d(8)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(self.bn(self.cgd(y))) + y  # y is read again after the gate

    model = _randomise(TwoReaders())
    fused = fuse_for_inference(model)
    assert isinstance(fused.bn, nn.BatchNorm3d) and not isinstance(fused.cgd, GateEpilogue)
    x = torch.randn(2, 4, 3, 5, 5)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def _context_blocks():
    from video_gc.models.blocks import NormalizationAttention
    from video_gc.models.blocks.global_context import PRESETS, GlobalContextBlock

    blocks = {"na": lambda dim: NormalizationAttention(dim)}
    blocks.update({name: (lambda dim, name=name: GlobalContextBlock.preset(name, dim)) for name in PRESETS})
    return blocks


def _random_block(kind, dim, seed=0):
    from video_gc.models.blocks import GlobalContextBlock

    torch.manual_seed(seed)
    both = {"gc_both": lambda dim: GlobalContextBlock(dim, fusion=("mul", "add"))}  # a scale and a shift
    block = {**_context_blocks(), **both}[kind](dim)
    return _randomise(block, seed).double()  # gamma, the zero-init last convs, LayerNorm: all non-trivial


@pytest.mark.parametrize("kind", sorted(_context_blocks()))
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_block_read_through_a_pointwise_conv_equals_block_on_its_output(kind, layout):
    block = _random_block(kind, 32)
    conv = nn.Conv3d(8, 32, 1, bias=False).double()
    bn = _randomise(nn.BatchNorm3d(32), seed=1).double()
    h = torch.randn(3, 8, 2, 5, 5, dtype=torch.float64).contiguous(memory_format=layout)
    with torch.no_grad():
        y = bn(conv(h))
        ref = block(y)
        weight, bias = fold_batchnorm(conv, bn)
        weight = weight.reshape(32, 8)
        absorber = absorber_for(block)
        scale, shift = absorber.fold_pointwise_conv(h, weight, bias, absorber.position_key(weight))
    assert (scale is None) != (shift is None)  # mul fusion scales, add fusion shifts
    out = y * scale.view(3, 32, 1, 1, 1) if scale is not None else y + shift.view(3, 32, 1, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ref, y)  # the block does something


def test_a_two_fusion_block_reads_through_a_pointwise_conv_as_scale_and_shift():
    block = _random_block("gc_both", 32)
    conv = nn.Conv3d(8, 32, 1, bias=False).double()
    bn = _randomise(nn.BatchNorm3d(32), seed=1).double()
    h = torch.randn(3, 8, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        y = bn(conv(h))
        weight, bias = fold_batchnorm(conv, bn)
        weight = weight.reshape(32, 8)
        absorber = absorber_for(block)
        scale, shift = absorber.fold_pointwise_conv(h, weight, bias, absorber.position_key(weight))
    torch.testing.assert_close(y * scale.view(3, 32, 1, 1, 1) + shift.view(3, 32, 1, 1, 1), block(y),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["na", "gc", "se", "gc_both"])
# positions P per sample against C_in = 8: P = 72 reads the statistics through the weight;
# P = 12 does so in a batch but runs the block on the output at batch 1; P = 8 always does.
@pytest.mark.parametrize("frames,spatial", [(2, 6), (3, 2), (2, 2)])
def test_conv_that_absorbed_a_block_equals_conv_bn_block_add_relu(kind, frames, spatial):
    block = _random_block(kind, 32).float()
    conv = nn.Conv3d(8, 32, 1, bias=False)
    bn = _randomise(nn.BatchNorm3d(32), seed=1)
    fused = FusedConv3d(conv, bn)
    fused.relu = True
    fused.absorb_context(absorber_for(block))
    gen = torch.Generator().manual_seed(2)
    # batch 1 (affine folded into the weights), a batch (one conv, then the affine), with and
    # without a residual to fuse
    for n, with_residual in ((1, True), (3, True), (1, False), (3, False)):
        h = torch.randn(n, 8, frames, spatial, spatial, generator=gen)
        residual = torch.randn(n, 32, frames, spatial, spatial, generator=gen) if with_residual else None
        with torch.no_grad():
            expected = torch.relu(block(bn(conv(h))) + (residual if with_residual else 0))
        for layout in (torch.contiguous_format, torch.channels_last_3d):
            hl = h.contiguous(memory_format=layout)
            rl = residual.contiguous(memory_format=layout) if with_residual else None
            with torch.inference_mode():  # oneDNN path
                fast = fused(hl, rl)
            generic = fused(hl.clone().requires_grad_(), rl)
            torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(generic.detach(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="weight packing is oneDNN's")
def test_packed_weight_is_reused_per_input_shape_and_survives_deepcopy():
    import copy

    conv = nn.Conv3d(16, 32, (3, 1, 1), padding=(1, 0, 0), bias=False)
    fused = FusedConv3d(conv, _randomise(nn.BatchNorm3d(32)))
    x = torch.randn(2, 16, 4, 5, 5).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        expected = F.conv3d(x, fused.weight, fused.bias, padding=(1, 0, 0))
    with torch.inference_mode():
        first = fused(x)
        packed = fused._packed[1]
        assert packed.is_mkldnn and fused(x) is not None and fused._packed[1] is packed  # packed once
        torch.testing.assert_close(fused(x[:1]), expected[:1], atol=1e-5, rtol=1e-5)  # a new shape repacks
        assert fused._packed[1] is not packed
        clone = copy.deepcopy(fused)
        assert clone._packed is None
        torch.testing.assert_close(clone(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)


def test_after1x1_blocks_are_absorbed_by_their_conv_and_afteradd_blocks_are_not():
    from video_gc.models.blocks import GlobalContextBlock, NormalizationAttention

    def opaque(fused):
        return sum(node.op == "call_module" and isinstance(fused.get_submodule(node.target),
                                                           (GlobalContextBlock, NormalizationAttention))
                   for node in fused.graph.nodes)

    for variant, absorbed in (("na", 16), ("gc_all", 16), ("se", 16), ("snl", 5), ("gc_after_add", 0)):
        fused = fuse_for_inference(_model(*VARIANTS[variant]))
        convs = [m for m in fused.modules() if isinstance(m, FusedConv3d) and m.context is not None]
        assert (len(convs), opaque(fused)) == (absorbed, 5 if variant == "gc_after_add" else 0), variant
        assert " + " not in fused.code and "relu" not in fused.code  # every add and ReLU still fused


def test_fused_convs_write_only_into_residuals_nothing_reads_later():
    fused = fuse_for_inference(_model())
    writable = [m for m in fused.modules() if isinstance(m, FusedConv3d) and m.residual_writable]
    assert len(writable) == 16  # the add of every bottleneck
    x = _clips()
    x_before = x.clone()
    with torch.inference_mode():
        first, second = fused(x), fused(x)
    assert torch.equal(x, x_before) and torch.equal(first, second)
    nl = fuse_for_inference(_model(*VARIANTS["nl5"]))
    # An identity block after an NL block (res3.2, res4.2, res4.4) adds the NL's output, which
    # the fused graph does not own; the NLs after res3.3 and res4.5 feed projection blocks.
    assert sum(m.residual_writable for m in nl.modules() if isinstance(m, FusedConv3d)) == 16 - 3


class _TwoConvs(nn.Module):
    """conv c1 + BN makes the residual r; conv c2 (+ BN) reads ``c2_input`` channels."""

    def __init__(self, c2_input: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv3d(4, 8, 1, bias=False), nn.BatchNorm3d(8)
        self.c2, self.b2 = nn.Conv3d(c2_input, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8)


class _SelfResidual(_TwoConvs):
    """The residual is also the input of the conv that adds it."""

    def __init__(self):
        super().__init__(c2_input=8)

    def forward(self, x):
        r = self.b1(self.c1(x))
        return torch.relu(self.b2(self.c2(r)) + r)


class _ViewOfResidual(_TwoConvs):
    """A view of the residual is read after the add."""

    def __init__(self):
        super().__init__(c2_input=4)

    def forward(self, x):
        r = self.b1(self.c1(x))
        tap = r[:, :2]
        y = torch.relu(self.b2(self.c2(x)) + r)
        return y.mean((2, 3, 4)), tap.mean((2, 3, 4))


@pytest.mark.parametrize("net", [_SelfResidual, _ViewOfResidual])
def test_no_inplace_write_into_a_residual_that_is_read_again(net):
    model = _randomise(net())
    fused = fuse_for_inference(model)
    assert not any(m.residual_writable for m in fused.modules() if isinstance(m, FusedConv3d))
    x = torch.randn(2, 4, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        with torch.inference_mode():
            torch.testing.assert_close(fused(x.contiguous(memory_format=layout)), model(x), atol=1e-5, rtol=1e-5)


def test_prepared_model_pickles_after_running_and_has_nothing_to_train():
    import pickle

    prepared = prepare_for_inference(_model(*VARIANTS["na"]), "fp32")
    with torch.inference_mode():
        before = prepared(_clips())
    loaded = pickle.loads(pickle.dumps(prepared))  # after the first call, with packed weights cached
    with torch.inference_mode():
        torch.testing.assert_close(loaded(_clips()), before)
    assert not any(p.requires_grad for p in prepared.parameters())


@pytest.mark.parametrize("eps, conv_bias, affine", [(1e-5, True, True), (1e-3, False, True), (1e-5, False, False)])
def test_batchnorm_fold_is_exact_in_float64_where_eps_matters(eps, conv_bias, affine):
    gen = torch.Generator().manual_seed(4)
    conv = nn.Conv3d(4, 6, 3, padding=1, bias=conv_bias).double()
    bn = nn.BatchNorm3d(6, eps=eps, affine=affine).double()
    with torch.no_grad():
        # Variances of the order of eps, so a fold that drops or changes eps is far off.
        bn.running_var.copy_(1e-6 + 1e-5 * torch.rand(6, generator=gen, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
        if affine:
            bn.weight.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
            bn.bias.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
    bn.eval()
    x = torch.randn(2, 4, 3, 5, 5, generator=gen, dtype=torch.float64)
    weight, bias = fold_batchnorm(conv, bn)
    torch.testing.assert_close(F.conv3d(x, weight, bias, padding=1), bn(conv(x)), rtol=1e-10, atol=1e-10)


def test_onnxruntime_row_is_skipped_with_a_reason_without_onnxruntime(monkeypatch):
    from video_gc.bench.model import BenchmarkResult, onnxruntime_runner

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without the package raises
    run, facts = onnxruntime_runner(_model(C2D), load_config(C2D, NARROW), crop=32, frames=4,
                                    device=torch.device("cpu"))
    assert run is None and facts == {"skipped": "onnxruntime is not installed; it is pinned in requirements.txt"}
    result = BenchmarkResult(config=C2D, mode="fp32", resolved_mode="fp32", device="cpu", threads=1, crop=32,
                             frames=4, max_abs_diff=0.0, top1_agreement=1.0, first_call_s=0.0, onnxruntime=facts)
    assert result.format().splitlines()[-1] == (
        "onnxruntime: skipped (onnxruntime is not installed; it is pinned in requirements.txt)")
