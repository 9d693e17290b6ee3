"""Hooks on a real model, the pictures and the two tools end to end (video_gc.analysis)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from video_gc.analysis.hooks import ContextRecorder, find_context_blocks
from video_gc.analysis.visualize import (
    clip_to_frames,
    default_query_points,
    plot_attention_pooling,
    plot_nonlocal_attention,
)
from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.utils.video_io import write_video

TINY = ["MODEL.ARCH", "c2d", "RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "3",
        "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TEST_CROP_SIZE", "32",
        "DATA.TRAIN_CROP_SIZE", "32", "NUM_GPUS", "0", "DATA_LOADER.NUM_WORKERS", "0",
        "NONLOCAL.LOCATION", "[[[]], [[1]], [[1]], [[]]]"]


def _tiny_model(instantiation, extra=()):
    torch.manual_seed(0)
    cfg = load_config(None, TINY + ["NONLOCAL.INSTANTIATION", instantiation, *extra])
    model = build_model(cfg).eval()
    # Non-zero output BN so z - x is a real signal (it starts at gamma = 0).
    for _, (_, block) in find_context_blocks(model).items():
        if hasattr(block, "bn"):
            torch.nn.init.normal_(block.bn.weight)
            torch.nn.init.normal_(block.bn.bias)
    return model


@pytest.mark.parametrize("instantiation", ["softmax", "dot_product"])
def test_hooks_capture_the_real_nonlocal_tensors(instantiation):
    model = _tiny_model(instantiation)
    x = torch.randn(2, 3, 4, 32, 32)
    with ContextRecorder(model) as rec, torch.no_grad():
        model(x)
    modules = dict(model.named_modules())
    assert sorted(rec.complete()) == ["res3.1.nonlocal", "res4.1.nonlocal"]
    for name, record in rec.complete().items():
        block = modules[name]
        inp = record.tensors["input"]
        with torch.no_grad():
            keys = block.pool(inp)
            theta = block.conv_theta(inp).flatten(2)
            phi = block.conv_phi(keys).flatten(2)
            scores = theta.transpose(1, 2) @ phi
            if instantiation == "softmax":
                expected = torch.softmax(scores * block.dim_inner ** -0.5, dim=-1)
            else:
                expected = scores / phi.shape[-1]
            z = block(inp)
        assert record.tensors["attention"].shape == (2, inp[0, 0].numel(), keys[0, 0].numel())
        assert torch.allclose(record.tensors["attention"], expected, atol=1e-5)
        # output_probe is z - x, the block output before fusion.
        assert torch.allclose(record.tensors["output"], z - inp, atol=1e-4)
        assert record.tensors["output"].abs().max() > 0
        assert record.key_grid == tuple(keys.shape[2:]) and record.grid == tuple(inp.shape[2:])
    # Hooks are removed on exit.
    with torch.no_grad():
        rec.clear()
        model(x)
    assert rec.records == {}


def test_hooks_capture_gc_alpha_and_rejects_unknown_block():
    model = _tiny_model("softmax", ["NONLOCAL.LOCATION", "[[[]], [[]], [[]], [[]]]",
                                    "CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [1], [], []]"])
    x = torch.randn(1, 3, 4, 32, 32)
    with ContextRecorder(model) as rec, torch.no_grad():
        model(x)
    (name, record), = rec.complete().items()
    block = dict(model.named_modules())[name]
    assert record.kind == "attention_pooling"
    assert record.tensors["alpha"].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert record.tensors["alpha"].shape == (1, 1, int(np.prod(record.grid)))
    with pytest.raises(KeyError, match="res9.0.nonlocal"):
        ContextRecorder(model, ["res9.0.nonlocal"])
    assert block.attention_probe is not None


def test_pngs_have_the_expected_size(tmp_path):
    frames = (np.random.default_rng(0).random((8, 48, 64, 3)) * 255).astype(np.uint8)
    attention = torch.softmax(torch.randn(4 * 6 * 8, 4 * 3 * 4), dim=-1)
    sizes = []
    for count in (2, 4):
        points = default_query_points((4, 6, 8), count)
        assert len(points) == count
        path = plot_nonlocal_attention(frames, attention, (4, 6, 8), (4, 3, 4), points,
                                       str(tmp_path / f"nl{count}.png"), block="res3.1.nonlocal")
        sizes.append(Image.open(path).size)
    assert sizes[0][0] == sizes[1][0] == 1600
    assert sizes[1][1] > sizes[0][1] > 200
    path = plot_attention_pooling(frames, torch.softmax(torch.randn(4 * 6 * 8), 0), (4, 6, 8),
                                  str(tmp_path / "gc.png"), block="res3.1.context", width_px=1200)
    assert Image.open(path).size[0] == 1200
    with pytest.raises(ValueError, match="does not match"):
        plot_nonlocal_attention(frames, attention, (4, 6, 8), (4, 6, 8), [0], str(tmp_path / "x.png"), block="b")


def test_clip_to_frames_inverts_normalisation():
    frames = torch.randint(0, 256, (3, 2, 4, 4)).float() / 255
    clip = (frames - 0.45) / 0.225
    out = clip_to_frames(clip, [0.45] * 3, [0.225] * 3)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (frames.permute(1, 2, 3, 0).numpy() * 255).round()).max() <= 1


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        frames = rng.integers(0, 255, size=(12, 40, 48, 3), dtype=np.uint8)
        write_video(str(tmp_path / "videos" / f"v{i}.mp4"), frames)
        lines.append(f"videos/v{i}.mp4 {i % 3}")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "classids.json").write_text(json.dumps({"a": 0, "b": 1, "c": 2}))
    return tmp_path


def test_tools_end_to_end(tiny_data, tmp_path, repo_root):
    opts = TINY + ["DATA.PATH_TO_DATA_DIR", str(tiny_data), "DATA.DECODING_BACKEND", "pyav",
                   "NONLOCAL.INSTANTIATION", "softmax", "CONTEXT.TYPE", "gc",
                   "CONTEXT.LOCATION", "[[], [0], [], []]"]
    out = tmp_path / "stats"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(repo_root, "tools", "analyze_context.py"), "--cfg", "",
                           "--num-videos", "2", "--output", str(out), "--exact", "--opts", *opts],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "random initialisation" in proc.stdout and "mean over blocks" in proc.stdout
    stats = json.loads((out / "context_stats.json").read_text())
    assert stats["num_videos"] == 2
    assert sorted(stats["nonlocal_blocks"]) == ["res3.1.nonlocal", "res4.1.nonlocal"]
    for block in stats["nonlocal_blocks"].values():
        assert {"input_cosine", "output_cosine", "attention_cosine", "attention_jsd", "num_queries"} <= set(block)
        assert block["num_queries"] == block["num_positions"]  # --exact
        assert 0 < block["input_cosine"] < 1 and block["attention_jsd"] >= 0
        assert block["output_cosine"] is None  # random init: the NL output BN has gamma = 0
    assert set(stats["mean"]) >= {"input_cosine", "output_cosine", "attention_cosine", "attention_jsd"}
    (gc,) = stats["attention_pooling_blocks"].values()
    assert 0 < gc["normalized_entropy"] <= 1

    from video_gc.analysis.cli import main_visualize

    pics = tmp_path / "pics"
    video = str(tiny_data / "videos" / "v1.mp4")
    assert main_visualize(["--cfg", "", "--video", video, "--queries", "2", "--output", str(pics),
                           "--opts", *opts]) == 0
    names = sorted(os.listdir(pics))
    assert names == ["res3_0_context.png", "res3_1_nonlocal.png", "res4_1_nonlocal.png"]
    assert Image.open(pics / "res3_1_nonlocal.png").size[0] == 1600
    assert main_visualize(["--cfg", "", "--index", "7", "--output", str(pics), "--opts", *opts]) == 2
