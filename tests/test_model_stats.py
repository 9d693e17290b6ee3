"""FLOP conventions (fvcore traces) and tools/model_stats.py."""

import functools
import json
import os
import subprocess
import sys

import pytest

from video_gc.bench.zoo import model_stats
from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.flops import count_flops, total_flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINETICS = os.path.join(REPO, "configs", "kinetics")


@functools.lru_cache(maxsize=None)  # full-width traces take seconds: share them between tests
def gflops(config, crop=224):
    cfg = load_config(os.path.join(KINETICS, config))
    flops = count_flops(build_model(cfg), (1, 3, cfg.DATA.NUM_FRAMES, crop, crop))
    return {k: v / 1e9 for k, v in flops.items()}


def test_slow_r50_flops_in_both_conventions():
    at224 = gflops("SLOW_8x8_R50.yaml", 224)
    at256 = gflops("SLOW_8x8_R50.yaml", 256)
    assert (round(at224["zoo"], 2), round(at224["fvcore"], 2)) == (41.74, 41.92)
    assert (round(at256["zoo"], 2), round(at256["fvcore"], 2)) == (54.52, 54.75)


def test_context_block_flop_deltas_count_the_attention_matmuls():
    base = gflops("SLOW_8x8_R50.yaml")["zoo"]
    nl = gflops("SLOW_8x8_R50_NL.yaml")["zoo"] - base
    gc = gflops("SLOW_8x8_R50_GC5.yaml")["zoo"] - base
    assert 22.0 < nl < 22.4
    # 5 GC blocks: attention-pooling bmm (C * THW each) + 1-channel key conv + the tiny transform.
    # Without the bmm the delta would be about half (0.012 G).
    assert 0.022 < gc < 0.027


def test_total_flops_rejects_unknown_convention():
    with pytest.raises(ValueError, match="allowed values: zoo, fvcore"):
        total_flops({"conv": 1}, "mmaction")


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "model_stats.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_json_output_is_one_object_matching_the_model():
    cfg_file = os.path.join(KINETICS, "SLOW_8x8_R50_GC5.yaml")
    opts = ["RESNET.WIDTH_PER_GROUP", "8"]
    proc = run_tool("--cfg", cfg_file, "--crop", "64", "--json", "--opts", *opts)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole stdout is exactly one JSON object
    assert isinstance(data, dict) and isinstance(data["params"], int) and isinstance(data["gflops"], float)
    model = build_model(load_config(cfg_file, opts))
    assert data["params"] == sum(p.numel() for p in model.parameters())
    assert data["gflops"] == pytest.approx(count_flops(model, (1, 3, 8, 64, 64))["zoo"] / 1e9)
    assert data["views"] == 30 and data["total_gflops"] == pytest.approx(30 * data["gflops"])
    assert data["paper_params_m"] == 34.30


def test_fvcore_convention_counts_bn_on_top():
    zoo = model_stats(os.path.join(KINETICS, "SLOW_8x8_R50.yaml"), ["RESNET.WIDTH_PER_GROUP", "4"], crop=32)
    fv = model_stats(os.path.join(KINETICS, "SLOW_8x8_R50.yaml"), ["RESNET.WIDTH_PER_GROUP", "4"], crop=32,
                     convention="fvcore")
    assert fv.gflops > zoo.gflops > 0 and fv.params == zoo.params
    assert zoo.crop == 32 and zoo.num_frames == 8


def test_table_for_a_folder_and_clear_errors(tmp_path):
    folder = tmp_path / "kinetics"  # the folder name keys the papers' figures
    folder.mkdir()
    for name in ("SLOW_8x8_R50", "SLOW_8x8_R50_GC", "SLOW_8x8_R50_NA"):
        (folder / f"{name}.yaml").write_text(f"_BASE_: {os.path.join(KINETICS, name)}.yaml\n")
    proc = run_tool("--cfg", str(folder), "--crop", "32", "--opts", "RESNET.WIDTH_PER_GROUP", "4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "params" in lines[0] and "GFLOPs/view" in lines[0] and "paper params" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:] if line.startswith("kinetics/")}
    assert len(rows) == 3
    assert "32.45M" in rows["kinetics/SLOW_8x8_R50"] and "39.29" in rows["kinetics/SLOW_8x8_R50"]
    assert "42.45M" in rows["kinetics/SLOW_8x8_R50_GC"] and "13 GC" in rows["kinetics/SLOW_8x8_R50_GC"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("CONTEXT:\n  TYPE: gcnet\n")
    proc = run_tool("--cfg", str(bad), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "CONTEXT.TYPE" in proc.stderr and "'gcnet'" in proc.stderr and "snl" in proc.stderr
