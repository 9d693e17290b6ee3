"""tools/convert_checkpoint.py, run as a real process, in both directions."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from pytorchvideo.models import hub
from weights_helpers import realistic_bn_

from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.weights import import_weights
from video_gc.utils.io import atomic_save, safe_torch_load


def _run(repo_root, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, os.path.join(repo_root, "tools", "convert_checkpoint.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=repo_root)


@pytest.mark.slow
def test_torchvision_to_video_gc(repo_root, tmp_path):
    source = str(tmp_path / "resnet50.pth")
    atomic_save(realistic_bn_(torchvision.models.resnet50()).state_dict(), source)
    cfg_file = tmp_path / "c2d.yaml"
    cfg_file.write_text("MODEL:\n  ARCH: c2d\n  NUM_CLASSES: 400\n")
    out = str(tmp_path / "c2d_from_imagenet.pyth")
    done = _run(repo_root, "--cfg", str(cfg_file), "--opts", "MODEL.ARCH", "slow", "--input", source,
                "--output", out, "--inflate", "center")
    assert done.returncode == 0, done.stderr
    assert "inflated 2D -> 3D:   53 tensors" in done.stdout and "new head" in done.stdout

    cfg = load_config(str(cfg_file), ["MODEL.ARCH", "slow"])
    checkpoint = safe_torch_load(out)
    model = build_model(cfg)
    model.load_state_dict(checkpoint["model_state"], strict=True)
    assert checkpoint["meta"]["source_format"] == "torchvision" and checkpoint["meta"]["inflate_mode"] == "center"
    expected = build_model(cfg)
    import_weights(expected, source, inflate_mode="center")
    for key, value in expected.state_dict().items():
        if not key.startswith("head."):  # the new head is a fresh random init in each process
            assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.slow
def test_video_gc_to_pytorchvideo(repo_root, tmp_path):
    opts = ["MODEL.ARCH", "c2d", "RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "7"]
    ours = realistic_bn_(build_model(load_config(None, opts)), seed=4).eval()
    source = str(tmp_path / "ours.pyth")
    atomic_save({"epoch": 3, "model_state": ours.state_dict()}, source)
    out = str(tmp_path / "c2d_r50_layout.pyth")
    done = _run(repo_root, "--opts", *opts, "--input", source, "--output", out, "--to", "pytorchvideo", "--strict")
    assert done.returncode == 0, done.stderr
    assert "pytorchvideo.models.hub.c2d_r50()" in done.stdout

    theirs = hub.c2d_r50(pretrained=False, stem_dim_out=8, model_num_class=7).eval()
    theirs.load_state_dict(safe_torch_load(out)["model_state"], strict=True)
    x = torch.randn(1, 3, 8, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-4, rtol=0)


def test_bad_input_exits_with_a_message(repo_root, tmp_path, capsys):
    sys.path.insert(0, os.path.join(repo_root, "tools"))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    missing = str(tmp_path / "nope.pkl")
    assert convert_checkpoint.main(["--input", missing, "--output", str(tmp_path / "out.pyth")]) == 2
    assert f"error: checkpoint not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "out.pyth").exists()
