"""Model-zoo interoperability: PyTorchVideo's slow_r50 / c2d_r50 and
PySlowFast checkpoints load into our slow / c2d with equal logits, and our slow / c2d / i3d
backbones export to PyTorchVideo's layout (slow_r50 / c2d_r50 / i3d_r50)."""

import pytest
import torch
from pytorchvideo.models import hub
from weights_helpers import realistic_bn_

from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.weights import export_pytorchvideo, import_weights, load_pretrained
from video_gc.models.weights import names
from video_gc.utils.io import atomic_save, safe_torch_load

TOL = 1e-4
# PyTorchVideo's heads average-pool with a fixed window: (8, 7, 7) for slow_r50 and
# (4, 7, 7) for c2d_r50 (T halved by its max-pool after res2), i.e. 8 x 224 x 224 clips.
CLIP = (1, 3, 8, 224, 224)


def _ours(arch, *opts):
    return build_model(load_config(None, ["MODEL.ARCH", arch, *opts])).eval()


def _logits_of_a_few_units(model):
    """Their and our fc start at N(0, 0.01); scale it so a 1e-4 tolerance is meaningful."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight") or name.endswith("projection.weight"):
                p.mul_(100.0)
    return model


def _clip(seed=0):
    return torch.randn(*CLIP, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch,builder", [("slow", hub.slow_r50), ("c2d", hub.c2d_r50)])
def test_pytorchvideo_checkpoint_imports_with_equal_logits(tmp_path, arch, builder):
    theirs = _logits_of_a_few_units(realistic_bn_(builder(pretrained=False), seed=1).eval())
    path = str(tmp_path / f"{arch}_r50.pyth")
    atomic_save({"model_state": theirs.state_dict()}, path)  # the layout of their model-zoo files

    ours = _ours(arch)
    report = import_weights(ours, path)
    assert report.source_format == "pytorchvideo"
    assert not report.partial and not report.inflated and not report.new_head
    x = _clip()
    with torch.no_grad():
        expected = theirs(x)  # ResNetBasicHead: pool, dropout, proj; no activation in the hub models
        torch.testing.assert_close(ours(x), expected, atol=TOL, rtol=0)
    assert expected.abs().max() > 0.5


@pytest.mark.parametrize("arch,builder", [("slow", hub.slow_r50), ("c2d", hub.c2d_r50), ("i3d", hub.i3d_r50)])
def test_export_to_pytorchvideo_loads_into_their_model(arch, builder):
    ours = _ours(arch, "RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "7")
    ours = _logits_of_a_few_units(realistic_bn_(ours, seed=2))
    state = export_pytorchvideo(ours.state_dict(), arch=arch)
    theirs = builder(pretrained=False, stem_dim_out=8, model_num_class=7).eval()
    theirs.load_state_dict(state, strict=True)
    x = _clip(1)
    with torch.no_grad():
        expected = ours(x)
        torch.testing.assert_close(theirs(x), expected, atol=TOL, rtol=0)
    assert expected.abs().max() > 0.5


def test_export_refuses_context_blocks():
    model = _ours("slow", "RESNET.WIDTH_PER_GROUP", "4", "CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [1], [], []]")
    with pytest.raises(ValueError, match=r"no place for .*res3\.1\.context"):
        export_pytorchvideo(model.state_dict(), arch="slow")


def test_pyslowfast_checkpoint_with_nonlocal_loads(tmp_path):
    opts = ["RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "7",
            "NONLOCAL.LOCATION", "[[[]], [[1]], [[1, 3]], [[]]]"]
    trained = realistic_bn_(_ours("slow", *opts), seed=3)  # NL output BNs get non-zero gammas too
    state = {names.ours_to_pyslowfast(k): v for k, v in trained.state_dict().items()}
    assert "s3.pathway0_nonlocal1.conv_theta.weight" in state and "s2.pathway0_res0.branch2.a.weight" in state
    path = str(tmp_path / "checkpoint_epoch_00010.pyth")
    atomic_save({"epoch": 10, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  ARCH: slow\n"}, path)

    cfg = load_config(None, ["MODEL.ARCH", "slow", *opts, "TRAIN.CHECKPOINT_FILE_PATH", path,
                             "TRAIN.CHECKPOINT_STRICT", "True"])
    model = build_model(cfg).eval()
    report = load_pretrained(model, cfg)
    assert report.source_format == "pyslowfast" and not report.partial and not report.context_kept
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), atol=TOL, rtol=0)


def test_c2d_checkpoint_inflates_into_slow(tmp_path):
    opts = ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "7"]
    c2d = _ours("c2d", *opts)
    path = str(tmp_path / "c2d.pyth")
    atomic_save({"model_state": c2d.state_dict()}, path)
    slow = _ours("slow", *opts)
    report = import_weights(slow, path, inflate_mode="center")
    assert sorted(k for k, _, _ in report.inflated) == sorted(
        f"res{s}.{i}.branch2.a.weight" for s, n in ((4, 6), (5, 3)) for i in range(n))
    assert not report.partial
    torch.testing.assert_close(slow.res4[0].branch2.a.weight[:, :, 1], c2d.res4[0].branch2.a.weight[:, :, 0])
    assert safe_torch_load(path)["model_state"].keys() == c2d.state_dict().keys()
