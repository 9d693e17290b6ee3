"""Weight files: layout detection, name mappings, inflation math, the restricted
Caffe2 unpickler, safety against code in checkpoints, and bad input."""

import pickle
import re
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.weights import (
    LoadReport,
    detect_format,
    import_weights,
    inflate_kernel,
    load_caffe2_pickle,
    load_source,
)
from video_gc.models.weights import names
from video_gc.utils.io import CheckpointError, atomic_save


def _small_model(arch="c2d", *opts):
    cfg = load_config(None, ["MODEL.ARCH", arch, "RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "5", *opts])
    return build_model(cfg)


# --- name mappings ----------------------------------------------------------------------------

@pytest.mark.parametrize("source,ours", [
    ("conv1.weight", "stem.conv.weight"),
    ("bn1.running_var", "stem.bn.running_var"),
    ("layer1.0.downsample.0.weight", "res2.0.branch1.weight"),
    ("layer2.0.downsample.1.bias", "res3.0.branch1_bn.bias"),
    ("layer3.5.conv2.weight", "res4.5.branch2.b.weight"),
    ("layer4.2.bn3.running_mean", "res5.2.branch2.c_bn.running_mean"),
    ("fc.weight", "head.projection.weight"),
])
def test_torchvision_names(source, ours):
    assert names.torchvision_to_ours(source) == ours


@pytest.mark.parametrize("source,ours", [
    ("conv1_w", "stem.conv.weight"),
    ("res_conv1_bn_s", "stem.bn.weight"),
    ("res_conv1_bn_b", "stem.bn.bias"),
    ("res2_0_branch1_w", "res2.0.branch1.weight"),
    ("res3_0_branch1_bn_s", "res3.0.branch1_bn.weight"),
    ("res2_0_branch2a_w", "res2.0.branch2.a.weight"),
    ("res4_5_branch2c_bn_b", "res4.5.branch2.c_bn.bias"),
    ("res5_1_branch2b_bn_rm", "res5.1.branch2.b_bn.running_mean"),
    ("res5_1_branch2b_bn_riv", "res5.1.branch2.b_bn.running_var"),
    ("pred_w", "head.projection.weight"),
    ("pred_b", "head.projection.bias"),
])
def test_caffe2_names(source, ours):
    assert names.caffe2_to_ours(source) == ours


@pytest.mark.parametrize("source,ours", [
    ("s1.pathway0_stem.conv.weight", "stem.conv.weight"),
    ("s1.pathway0_stem.bn.running_mean", "stem.bn.running_mean"),
    ("s2.pathway0_res0.branch1.weight", "res2.0.branch1.weight"),
    ("s2.pathway0_res0.branch2.a.weight", "res2.0.branch2.a.weight"),
    ("s4.pathway0_res3.branch2.b_bn.weight", "res4.3.branch2.b_bn.weight"),
    ("s3.pathway0_nonlocal1.conv_theta.weight", "res3.1.nonlocal.conv_theta.weight"),
    ("s3.pathway0_nonlocal1.bn.bias", "res3.1.nonlocal.bn.bias"),
    ("head.projection.weight", "head.projection.weight"),
])
def test_pyslowfast_names_both_ways(source, ours):
    assert names.pyslowfast_to_ours(source) == ours
    assert names.ours_to_pyslowfast(ours) == source


def test_pytorchvideo_names_follow_the_pool_layout():
    # c2d_r50 puts a max-pool module at blocks.2, so res3 is blocks.3 and the head blocks.6.
    c2d_keys = ["blocks.0.conv.weight", "blocks.1.res_blocks.0.branch1_conv.weight",
                "blocks.3.res_blocks.0.branch2.conv_a.weight", "blocks.4.res_blocks.0.branch2.norm_b.bias",
                "blocks.5.res_blocks.2.branch2.norm_c.running_var", "blocks.6.proj.weight"]
    layout = names.pytorchvideo_layout(c2d_keys)
    assert layout == {0: "stem", 1: "res2", 3: "res3", 4: "res4", 5: "res5", 6: "head"}
    ours = [names.pytorchvideo_to_ours(k, layout) for k in c2d_keys]
    assert ours == ["stem.conv.weight", "res2.0.branch1.weight", "res3.0.branch2.a.weight",
                    "res4.0.branch2.b_bn.bias", "res5.2.branch2.c_bn.running_var", "head.projection.weight"]
    assert [names.ours_to_pytorchvideo(k, stage1_pool=True) for k in ours] == c2d_keys
    assert names.ours_to_pytorchvideo("res3.0.branch2.a.weight", stage1_pool=False) == \
        "blocks.2.res_blocks.0.branch2.conv_a.weight"
    assert names.ours_to_pytorchvideo("head.projection.bias", stage1_pool=False) == "blocks.5.proj.bias"
    assert names.ours_to_pytorchvideo("res3.1.context.transform.0.weight", stage1_pool=False) is None


def test_format_detection():
    t = torch.zeros(1)
    cases = {
        "torchvision": {"conv1.weight": t, "layer1.0.conv1.weight": t},
        "caffe2": {"conv1_w": np.zeros(1, np.float32), "res2_0_branch2a_w": np.zeros(1, np.float32)},
        "pyslowfast": {"s1.pathway0_stem.conv.weight": t},
        "pytorchvideo": {"blocks.0.conv.weight": t, "blocks.1.res_blocks.0.branch2.conv_a.weight": t},
        "video_gc": {"stem.conv.weight": t, "res2.0.branch2.a.weight": t},
    }
    for fmt, state in cases.items():
        assert detect_format(state, "x.pth") == fmt
    with pytest.raises(CheckpointError, match="vit.pth.*not a ResNet checkpoint.*patch_embed.proj.weight"):
        detect_format({"patch_embed.proj.weight": t}, "vit.pth")


# --- inflation math ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["average", "center"])
def test_inflated_conv_on_static_video_equals_2d_conv(mode):
    g = torch.Generator().manual_seed(0)
    w2d = torch.randn(6, 4, 3, 3, generator=g)
    image = torch.randn(1, 4, 9, 9, generator=g)
    w3d = inflate_kernel(w2d, 3, mode)
    assert w3d.shape == (6, 4, 3, 3, 3)
    torch.testing.assert_close(w3d.sum(2), w2d)
    out3d = F.conv3d(image.unsqueeze(2).repeat(1, 1, 5, 1, 1), w3d, padding=(1, 1, 1))
    out2d = F.conv2d(image, w2d, padding=1)
    frames = range(5) if mode == "center" else range(1, 4)
    for t in frames:
        torch.testing.assert_close(out3d[:, :, t], out2d, atol=1e-5, rtol=1e-5)
    if mode == "average":  # the zero padding in time costs 1/3 of the response at the ends
        torch.testing.assert_close(out3d[:, :, 0], out2d * 2 / 3, atol=1e-5, rtol=1e-5)
    else:
        assert torch.count_nonzero(w3d[:, :, [0, 2]]) == 0


def test_inflate_kernel_rejects_bad_input():
    with pytest.raises(ValueError, match="inflate mode 'middle'"):
        inflate_kernel(torch.zeros(1, 1, 3, 3), 3, "middle")
    with pytest.raises(ValueError, match="temporal size 1"):
        inflate_kernel(torch.zeros(1, 1, 3, 3, 3), 3)


# --- Caffe2 pickles ---------------------------------------------------------------------------

def _py2_pickle(name: str, array: np.ndarray) -> bytes:
    """The bytes Python 2 + numpy 1 write for {"blobs": {name: array}} at protocol 2."""
    def s(text):  # SHORT_BINSTRING: a Python 2 str
        raw = text.encode("latin1") if isinstance(text, str) else text
        return b"U" + bytes([len(raw)]) + raw

    raw = array.tobytes()
    dims = b"".join(b"K" + bytes([d]) for d in array.shape)
    return (
        b"\x80\x02}" + s("blobs") + b"}" + s(name)
        + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s("b") + b"\x87R"
        + b"(K\x01" + dims + b"\x86cnumpy\ndtype\n" + s("f4") + b"\x89\x88\x87R"
        + b"(K\x03" + s("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tbss."
    )


def test_reads_python2_detectron_pickle(tmp_path):
    array = (np.arange(6, dtype=np.float32) * -37.25 + 1e-3).reshape(2, 3)  # bytes >= 0x80 included
    path = tmp_path / "R-50.pkl"
    path.write_bytes(_py2_pickle("res2_0_branch2a_w", array))
    blobs = load_caffe2_pickle(str(path))["blobs"]
    np.testing.assert_array_equal(blobs["res2_0_branch2a_w"], array)
    source = load_source(str(path))
    assert source.format == "caffe2"
    torch.testing.assert_close(source.tensors["res2.0.branch2.a.weight"], torch.from_numpy(array))


def test_reads_protocol_5_pickles(tmp_path):
    """Protocol 5 (Python 3.14's default) stores arrays through numpy's _frombuffer, not _reconstruct."""
    blobs = {"conv1_w": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
             "pred_w": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))}
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=5))
    assert b"_frombuffer" in path.read_bytes()
    loaded = load_caffe2_pickle(str(path))["blobs"]
    for name, array in blobs.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype and loaded[name].flags.writeable


def test_caffe2_affine_bn_equals_scale_and_bias(tmp_path):
    """Detectron's frozen BN is x * s + b; loaded into a BatchNorm3d it must compute the same."""
    model = _small_model("c2d_nopool").eval()
    g = torch.Generator().manual_seed(0)
    blobs = {"conv1_w": np.random.default_rng(0).standard_normal((4, 3, 7, 7)).astype(np.float32),
             "res_conv1_bn_s": (torch.rand(4, generator=g) + 0.5).numpy(),
             "res_conv1_bn_b": torch.randn(4, generator=g).numpy()}
    path = tmp_path / "stem.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=2))
    report = import_weights(model, str(path))
    assert report.affine_bn == ["stem.bn"]
    assert len(report.missing) > 0  # only the stem was in the file
    x = torch.randn(2, 4, 3, 5, 5, generator=g)
    expected = x * torch.from_numpy(blobs["res_conv1_bn_s"]).view(1, 4, 1, 1, 1) + \
        torch.from_numpy(blobs["res_conv1_bn_b"]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(model.stem.bn(x), expected, atol=1e-6, rtol=1e-6)


class _CreatesFile:
    """Unpickling this runs open(path, "w"): the file appears."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_caffe2_pickle_with_code_is_refused(tmp_path):
    target, control = tmp_path / "pwned", tmp_path / "control"
    evil = tmp_path / "R-50.pkl"
    evil.write_bytes(pickle.dumps({"blobs": {"conv1_w": _CreatesFile(target)}}, protocol=2))
    pickle.loads(pickle.dumps(_CreatesFile(control), protocol=2))
    assert control.exists()  # the payload is live under a plain unpickler

    for fmt in ("auto", "caffe2"):
        with pytest.raises(CheckpointError) as err:
            import_weights(_small_model(), str(evil), fmt=fmt)
        message = str(err.value)
        assert str(evil) in message and "refused" in message and "io.open' is not allowed" in message
    assert not target.exists()


def test_torch_checkpoint_with_code_is_refused(tmp_path):
    target, control = tmp_path / "pwned", tmp_path / "control"
    evil, live = tmp_path / "evil.pyth", tmp_path / "live.pyth"
    torch.save({"model_state": {"stem.conv.weight": _CreatesFile(target)}}, evil)
    torch.save(_CreatesFile(control), live)
    torch.load(live, weights_only=False)  # control only: shows the payload runs when loading is unrestricted
    assert control.exists()

    for fmt in ("auto", "pyslowfast", "video_gc"):
        with pytest.raises(CheckpointError) as err:
            import_weights(_small_model(), str(evil), fmt=fmt)
        assert str(evil) in str(err.value) and "refused" in str(err.value)
    assert not target.exists()


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": np.array([1, "a"], dtype=object)}, protocol=2))
    with pytest.raises(CheckpointError, match="object dtype"):
        load_caffe2_pickle(str(path))


# --- bad input --------------------------------------------------------------------------------

def test_legacy_and_ddp_torch_files_are_detected(tmp_path):
    model = _small_model()
    path = tmp_path / "legacy.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from a DDP-wrapped model
    torch.save({"model_state": state}, path, _use_new_zipfile_serialization=False)
    fresh = _small_model()
    report = import_weights(fresh, str(path))
    assert report.source_format == "video_gc" and not report.partial and not report.inflated
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def _problem_files(tmp_path):
    model = _small_model()
    good = tmp_path / "good.pyth"
    atomic_save({"model_state": model.state_dict()}, str(good))
    truncated = tmp_path / "truncated.pyth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pkl = tmp_path / "truncated.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros((4, 3, 7, 7), np.float32)}}, protocol=2)[:-40])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    vgg = tmp_path / "vgg.pth"
    atomic_save({"features.0.weight": torch.zeros(64, 3, 3, 3), "classifier.0.weight": torch.zeros(10, 5)}, str(vgg))
    resnet18 = tmp_path / "resnet18.pth"
    atomic_save(torchvision.models.resnet18().state_dict(), str(resnet18))
    return [
        (tmp_path / "missing.pth", "not found"),
        (empty, "empty"),
        (tmp_path, "folder"),
        (truncated, "truncated or corrupt"),
        (pkl, "truncated or corrupt"),
        (garbage, "truncated or corrupt, or neither a torch checkpoint nor a pickle"),
        (vgg, "not a ResNet checkpoint"),
        (resnet18, "nothing in checkpoint .* matches this model"),
    ]


def test_bad_checkpoints_stop_with_a_message_naming_the_file(tmp_path):
    for path, problem in _problem_files(tmp_path):
        with pytest.raises(CheckpointError) as err:
            import_weights(_small_model(), str(path))
        message = str(err.value)
        assert str(path) in message, message
        assert re.search(problem, message), message


def test_explicit_format_that_does_not_fit_the_file(tmp_path):
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros((4, 3, 7, 7), np.float32)}}, protocol=2))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(pkl))} is a plain pickle.*use format caffe2"):
        import_weights(_small_model(), str(pkl), fmt="torchvision")
    ours = tmp_path / "ours.pyth"
    atomic_save({"model_state": _small_model().state_dict()}, str(ours))
    with pytest.raises(CheckpointError, match=f"nothing in checkpoint {re.escape(str(ours))} \\(pyslowfast layout"):
        import_weights(_small_model(), str(ours), fmt="pyslowfast")


def test_report_lists_problems_key_by_key():
    report = LoadReport(path="w.pth", source_format="torchvision", inflate_mode="center",
                        loaded=["stem.bn.weight"], inflated=[("stem.conv.weight", (64, 3, 7, 7), (64, 3, 1, 7, 7))],
                        new_head=[("head.projection.weight", (1000, 2048), (400, 2048))],
                        missing=["res2.0.branch2.a.weight"], unused=["layer5.0.conv1.weight"],
                        mismatched=[("res2.0.branch2.b.weight", (64, 64, 3, 3), (32, 32, 1, 3, 3))])
    text = report.format(verbose=True)
    assert "Weights from w.pth (format: torchvision, 2D kernels inflated by 'center')" in text
    assert "stem.conv.weight: [64, 3, 7, 7] -> [64, 3, 1, 7, 7]" in text
    assert "head.projection.weight (new head: checkpoint [1000, 2048] vs model [400, 2048])" in text
    assert "res2.0.branch2.a.weight (not in checkpoint)" in text
    assert "res2.0.branch2.b.weight: checkpoint [64, 64, 3, 3] vs model [32, 32, 1, 3, 3]" in text
    assert report.partial and len(report.problems()) == 3
    assert report.summary()["inflated"] == 1


def test_require_head_and_context_refuse_what_strict_mode_allows(tmp_path):
    """Scoring needs the checkpoint's own classifier and context blocks: strict mode alone
    accepts a new head (fine-tuning) and context blocks at init, so the test run asks for more."""
    trained = _small_model("c2d", "MODEL.NUM_CLASSES", "7")
    path = tmp_path / "seven_classes.pyth"
    atomic_save({"model_state": trained.state_dict()}, str(path))

    model = _small_model("c2d")  # 5 classes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert import_weights(_small_model("c2d"), str(path), strict=True).new_head  # strict lets it through
    with pytest.raises(CheckpointError) as err:
        import_weights(model, str(path), strict=True, require_head=True)
    message = str(err.value)
    assert str(path) in message and "head.projection.weight: checkpoint [7, 128], model [5, 128]" in message
    assert "MODEL.NUM_CLASSES" in message
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing was written

    same = tmp_path / "five_classes.pyth"
    atomic_save({"model_state": _small_model("c2d").state_dict()}, str(same))
    gc = ["CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [1], [], []]"]
    report = import_weights(_small_model("c2d", *gc), str(same), strict=True, require_head=True)
    assert report.context_kept and not report.new_head
    with pytest.raises(CheckpointError, match=r"five_classes.pyth has none of this model's context-block weights"
                                              r" \(\d+ tensors, e.g. res3\.1\.context\."):
        import_weights(_small_model("c2d", *gc), str(same), require_context=True)
    # A GC checkpoint restores its blocks (regression: GC's 4-D LayerNorm weight once made the
    # importer take any GC checkpoint for an ImageNet one and skip every context tensor).
    gc_trained = _small_model("c2d", *gc)
    with_gc = tmp_path / "with_gc.pyth"
    atomic_save({"model_state": gc_trained.state_dict()}, str(with_gc))
    fresh = _small_model("c2d", *gc)
    report = import_weights(fresh, str(with_gc), strict=True, require_head=True, require_context=True)
    assert not report.context_kept and not report.new_head and not report.partial
    assert torch.equal(fresh.res3[1].context.conv_k.weight, gc_trained.res3[1].context.conv_k.weight)
