"""Proof of inflation: an ImageNet ResNet-50 inflated into every
arch gives the 2D network's features and logits on a video of identical frames."""

import pickle

import pytest
import torch
import torchvision
from weights_helpers import realistic_bn_, torchvision_to_detectron_blobs

from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.weights import import_weights, load_pretrained
from video_gc.utils.io import CheckpointError, atomic_save

NUM_CONVS_R50 = 53  # stem + 16 bottlenecks x 3 + 4 projection shortcuts; as many BNs
TOL = 1e-4


def _cfg(arch, *opts):
    return load_config(None, ["MODEL.ARCH", arch, "MODEL.NUM_CLASSES", "1000", *opts])


def _model(arch, *opts):
    return build_model(_cfg(arch, *opts)).eval()


def _video(image, frames):
    return image.unsqueeze(2).repeat(1, 1, frames, 1, 1)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """A torchvision ResNet-50 with random weights on disk, and its outputs on one image."""
    torch.manual_seed(0)
    net = realistic_bn_(torchvision.models.resnet50()).eval()
    with torch.no_grad():
        net.fc.weight.mul_(20.0)  # logits of a few units, like a trained fc
    folder = tmp_path_factory.mktemp("imagenet")
    path = str(folder / "resnet50.pth")
    atomic_save(net.state_dict(), path)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = {}
    hooks = [net.avgpool.register_forward_hook(lambda m, i, o: out.__setitem__("features", o.flatten(1))),
             net.layer4.register_forward_hook(lambda m, i, o: out.__setitem__("res5", o))]
    with torch.no_grad():
        out["logits"] = net(image)
    for h in hooks:
        h.remove()
    assert out["logits"].abs().max() > 0.5 and out["features"].abs().max() > 0.1
    return {"path": path, "folder": folder, "net": net, "image": image, **out}


def _assert_matches_2d(model, imagenet, frames=4):
    x = _video(imagenet["image"], frames)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    torch.testing.assert_close(features, imagenet["features"], atol=TOL, rtol=0)
    torch.testing.assert_close(logits, imagenet["logits"], atol=TOL, rtol=0)


@pytest.mark.parametrize("arch,mode", [("c2d", "average"), ("c2d_nopool", "average"), ("slow", "center")])
def test_inflated_torchvision_equals_2d_network(imagenet, arch, mode):
    model = _model(arch)
    report = import_weights(model, imagenet["path"], inflate_mode=mode)
    assert report.source_format == "torchvision"
    assert len(report.inflated) == NUM_CONVS_R50
    assert not report.partial and not report.new_head
    _assert_matches_2d(model, imagenet)
    assert "inflated 2D -> 3D:   53 tensors" in report.format()


def test_slow_average_inflation_matches_at_interior_frames(imagenet):
    """res4/res5 have 3x1x1 convs in 9 blocks; zero padding reaches 9 frames in from each end."""
    frames = 19
    model = _model("slow")
    import_weights(model, imagenet["path"], inflate_mode="average")
    maps = {}
    model.res5.register_forward_hook(lambda m, i, o: maps.__setitem__("res5", o))
    with torch.no_grad():
        features = model.forward_features(_video(imagenet["image"], frames))
    res5, ref = maps["res5"], imagenet["res5"]
    torch.testing.assert_close(res5[:, :, frames // 2], ref, atol=TOL, rtol=0)
    for edge in (0, frames - 1):
        assert (res5[:, :, edge] - ref).abs().max() > 1e-3
    assert (features - imagenet["features"]).abs().max() > 1e-3


def _context_params(model):
    blocks = (".context.", ".nonlocal.", ".cgd.")
    return {k: v.clone() for k, v in model.state_dict().items() if any(s in k for s in blocks)}


@pytest.mark.parametrize("arch,opts", [
    ("slow", ["CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [1, 3], [1, 3, 5], []]",
              "NONLOCAL.LOCATION", "[[[]], [[1]], [[0]], [[]]]"]),
    ("c2d", ["CONTEXT.TYPE", "cgd", "CONTEXT.CGD.ZERO_INIT", "True", "CONTEXT.LOCATION", "[[0], [1], [2], [0]]"]),
])
def test_context_blocks_keep_their_init(imagenet, arch, opts):
    model = _model(arch, *opts)
    before = _context_params(model)
    assert before
    report = import_weights(model, imagenet["path"], inflate_mode="center")
    after = _context_params(model)
    assert sorted(report.context_kept) == sorted(k for k in before if not k.endswith("num_batches_tracked"))
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not report.partial
    _assert_matches_2d(model, imagenet)


@pytest.mark.parametrize("arch,mode", [("c2d", "average"), ("slow", "center")])
def test_caffe2_pickle_inflation_equals_2d_network(imagenet, arch, mode):
    path = imagenet["folder"] / "R-50.pkl"
    if not path.exists():
        with open(path, "wb") as f:
            pickle.dump(torchvision_to_detectron_blobs(imagenet["net"].state_dict()), f, protocol=2)
    model = _model(arch)
    report = import_weights(model, str(path), inflate_mode=mode)
    assert report.source_format == "caffe2"
    assert len(report.affine_bn) == NUM_CONVS_R50 and len(report.inflated) == NUM_CONVS_R50
    assert not report.partial  # the momentum blob is solver state, not an unused weight
    _assert_matches_2d(model, imagenet)


def test_new_head_keeps_fresh_init_when_classes_differ(imagenet):
    model = build_model(load_config(None, ["MODEL.ARCH", "c2d", "MODEL.NUM_CLASSES", "400"]))
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = import_weights(model, imagenet["path"])
    assert [k for k, _, _ in report.new_head] == ["head.projection.weight", "head.projection.bias"]
    assert report.new_head[0][1:] == ((1000, 2048), (400, 2048))
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, head[key])
    assert torch.equal(model.stem.conv.weight[:, :, 0], imagenet["net"].conv1.weight)
    assert "head.projection.weight (new head: checkpoint [1000, 2048] vs model [400, 2048])" in report.format()


def test_partial_match_is_reported_and_fails_when_strict(imagenet, tmp_path):
    state = imagenet["net"].state_dict()
    del state["layer3.2.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = str(tmp_path / "partial.pth")
    atomic_save({"state_dict": state}, path)

    with pytest.raises(CheckpointError) as err:
        import_weights(_model("c2d"), path, strict=True)
    assert path in str(err.value)
    assert "res4.2.branch2.b.weight" in str(err.value) and "layer5.0.conv1.weight" in str(err.value)

    model = _model("c2d")
    init = model.res4[2].branch2.b.weight.clone()
    report = import_weights(model, path)
    assert report.missing == ["res4.2.branch2.b.weight"]
    assert report.unused == ["layer5.0.conv1.weight"]
    assert torch.equal(model.res4[2].branch2.b.weight, init)
    text = report.format()
    assert "res4.2.branch2.b.weight (not in checkpoint)" in text and "layer5.0.conv1.weight" in text


def test_load_pretrained_follows_the_config(imagenet):
    opts = ["TRAIN.CHECKPOINT_FILE_PATH", imagenet["path"], "TRAIN.CHECKPOINT_TYPE", "pytorch"]
    with pytest.raises(CheckpointError, match="TRAIN.CHECKPOINT_INFLATE True"):
        load_pretrained(build_model(_cfg("slow", *opts)), _cfg("slow", *opts))

    cfg = _cfg("slow", *opts, "TRAIN.CHECKPOINT_INFLATE", "True", "TRAIN.CHECKPOINT_INFLATE_MODE", "center",
               "TRAIN.CHECKPOINT_STRICT", "True")
    model = build_model(cfg).eval()
    report = load_pretrained(model, cfg)
    assert report.inflate_mode == "center" and len(report.inflated) == NUM_CONVS_R50
    _assert_matches_2d(model, imagenet)
    assert load_pretrained(model, _cfg("slow")) is None
