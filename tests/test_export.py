"""Export to ONNX and TorchScript: every architecture and context block gives PyTorch's logits,
and an export that cannot be trusted fails by name and leaves no file behind."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from video_gc.config import load_config
from video_gc.data.lists import write_classids
from video_gc.engine.checkpoint import save_checkpoint
from video_gc.export import FORMATS, TOLERANCE, ExportError, export_checkpoint, file_sha256
from video_gc.models import build_model
from video_gc.registry import BLOCKS, BlockSpec

SMALL = ["RESNET.WIDTH_PER_GROUP", "4", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
         "DATA.TEST_CROP_SIZE", "32", "MODEL.NUM_CLASSES", "5"]
CONTEXT = ["CONTEXT.LOCATION", "[[], [1], [1], []]"]
NL = ["MODEL.ARCH", "c2d", "NONLOCAL.LOCATION", "[[[]], [[1]], [[1]], [[]]]", "NONLOCAL.INSTANTIATION"]

# One case per architecture and context block (two small exports each: about 2 s).
CASES = {
    "slow": [],
    "c2d": ["MODEL.ARCH", "c2d"],
    "c2d_nl32": ["MODEL.ARCH", "c2d_nl32", "DATA.NUM_FRAMES", "8"],
    "i3d": ["MODEL.ARCH", "i3d"],
    "nl_gaussian": NL + ["gaussian"],
    "nl_embedded_gaussian": NL + ["embedded_gaussian"],
    "nl_dot_product": NL + ["dot_product"],
    "nl_concatenation": NL + ["concatenation"],
    "gc": ["CONTEXT.TYPE", "gc"] + CONTEXT,
    "snl": ["CONTEXT.TYPE", "snl"] + CONTEXT,
    "se": ["CONTEXT.TYPE", "se"] + CONTEXT,
    "avg_add": ["CONTEXT.TYPE", "avg_add"] + CONTEXT,
    "att_mul": ["CONTEXT.TYPE", "att_mul"] + CONTEXT,
    "custom_mul_add": ["CONTEXT.TYPE", "custom", "CONTEXT.GC.FUSION", "['mul', 'add']"] + CONTEXT,
    "cgd_v10_shared": ["CONTEXT.TYPE", "cgd", "CONTEXT.CGD.VARIANT", "v10", "CONTEXT.CGD.SHARE_TEMPORAL", "True"]
    + CONTEXT,
    "cgd_v10_unshared": ["CONTEXT.TYPE", "cgd", "CONTEXT.CGD.VARIANT", "v10", "CONTEXT.CGD.SHARE_TEMPORAL", "False"]
    + CONTEXT,
    "na": ["CONTEXT.TYPE", "na"] + CONTEXT,
}


def _checkpoint(folder, opts):
    """A checkpoint written by save_checkpoint; every weight moved off its init so zero-initialised
    context branches and the small-init head take part in the comparison, with logits of order 1
    (larger steps blow up the dot-product block's logits past what float32 holds to 1e-4)."""
    cfg = load_config(None, SMALL + opts)
    model = build_model(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return cfg, save_checkpoint(str(folder), 0, model, cfg=cfg)


@pytest.mark.parametrize("case", CASES)
def test_export_matches_pytorch(tmp_path, case):
    cfg, ckpt = _checkpoint(tmp_path, CASES[case])
    for fmt in FORMATS:
        result = export_checkpoint(cfg, ckpt, str(tmp_path / f"model.{fmt}"), fmt)
        assert set(result.max_abs_diff) == {1, 3}
        assert max(result.max_abs_diff.values()) <= TOLERANCE, (fmt, result.max_abs_diff)
        assert os.path.isfile(result.path) and os.path.isfile(result.sidecar_path)


def test_tool_writes_a_checked_onnx_file_and_sidecar(tmp_path, repo_root):
    data = tmp_path / "data"
    data.mkdir()
    names = ["a", "b", "c", "d", "e"]
    write_classids(str(data / "classids.json"), names)
    _, ckpt = _checkpoint(tmp_path, [])
    out = tmp_path / "export" / "slow.onnx"
    cmd = [sys.executable, os.path.join(repo_root, "tools", "export_model.py"), "--checkpoint", ckpt,
           "--format", "onnx", "--output", str(out), "--opts", *SMALL, "DATA.PATH_TO_DATA_DIR", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "batch 1:" in proc.stdout and "batch 3:" in proc.stdout
    side = json.loads((tmp_path / "export" / "slow.onnx.json").read_text())
    assert side["input"] == {"name": "clip", "shape": [None, 3, 4, 32, 32], "layout": "NCTHW", "dtype": "float32",
                             "dynamic_batch": True}
    assert side["format"] == "onnx" and side["opset"] == 17
    assert side["num_classes"] == 5 and side["class_names"] == names
    assert side["preprocessing"]["frames"] == 4 and side["preprocessing"]["test_crop"] == 32
    assert side["checkpoint"] == {"path": ckpt, "sha256": file_sha256(ckpt)}
    assert all(d <= TOLERANCE for d in side["check"]["max_abs_diff"].values())
    assert sorted(os.listdir(out.parent)) == ["slow.onnx", "slow.onnx.json"]


def test_fixed_batch_torchscript(tmp_path):
    cfg, ckpt = _checkpoint(tmp_path, ["MODEL.ARCH", "c2d"])
    result = export_checkpoint(cfg, ckpt, str(tmp_path / "c2d.pt"), "torchscript", batch=2)
    assert result.sidecar["input"]["shape"] == [2, 3, 4, 32, 32] and result.sidecar["opset"] is None
    assert list(result.max_abs_diff) == [2]
    traced = torch.jit.load(result.path)
    assert tuple(traced(torch.zeros(2, 3, 4, 32, 32)).shape) == (2, 5)


class _Eig(nn.Module):
    """Scales by the eigenvalues of a learned 2x2 matrix: linalg_eigvals has no ONNX form."""

    is_context_block = True

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.eye(2))

    def forward(self, x):
        return x * torch.linalg.eigvals(self.m).real.mean()


class _BatchBaked(nn.Module):
    """int() of a shape freezes the traced batch size into the graph: wrong at any other size."""

    is_context_block = True

    def forward(self, x):
        return x * int(x.shape[0])


@pytest.fixture
def toy_blocks():
    for name, module in (("toy_eig", _Eig), ("toy_batch", _BatchBaked)):
        BLOCKS.register(name, BlockSpec(build=lambda context_cfg, dim, num_frames, m=module: m(), module=module,
                                        positions=("afterAdd",), default_position="afterAdd"))
    try:
        yield
    finally:
        BLOCKS.unregister("toy_eig")
        BLOCKS.unregister("toy_batch")


def test_unsupported_op_fails_by_name_and_leaves_nothing(tmp_path, toy_blocks):
    cfg, ckpt = _checkpoint(tmp_path, ["MODEL.ARCH", "c2d", "CONTEXT.TYPE", "toy_eig",
                                       "CONTEXT.LOCATION", "[[0], [], [], []]"])
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"unsupported operator.*linalg_eigvals"):
        export_checkpoint(cfg, ckpt, str(out / "eig.onnx"), "onnx")
    assert os.listdir(out) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_trace_that_does_not_generalise_fails_the_check(tmp_path, toy_blocks, fmt):
    cfg, ckpt = _checkpoint(tmp_path, ["MODEL.ARCH", "c2d", "CONTEXT.TYPE", "toy_batch",
                                       "CONTEXT.LOCATION", "[[0], [], [], []]"])
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=rf"{fmt} model differs from PyTorch at batch size 1: max abs difference"):
        export_checkpoint(cfg, ckpt, str(out / "model"), fmt)
    assert os.listdir(out) == []
