"""tools/check_gpu.py works before GPU time is spent on it: the whole script at tiny sizes on
the CPU, its per-section time limit and budget, and the 224 px shared weights it compares
PyTorchVideo's slow_r50 with."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "check_gpu.py")


def _tool():
    from video_gc.bench import gpu

    return gpu


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, TOOL, "--device", "cpu", "--quick", str(out)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=1500)
    log = (out / "check_gpu.log").read_text() if (out / "check_gpu.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:] + log[-3000:]
    report = json.loads((out / "check_gpu.json").read_text())
    tool = _tool()
    assert list(report["sections"]) == list(tool.SECTION_NAMES)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section)
        assert 0 < section["seconds"] <= section["limit_s"]
    assert report["ok"] and report["total_seconds"] < report["budget_s"]
    assert {f.name for f in out.iterdir()} == set(tool.OUT_FILES)

    s = {name: section["result"] for name, section in report["sections"].items()}
    assert s["env"]["torch"] == torch.__version__ and not s["env"]["import_failures"]
    assert not s["env"]["missing_apis"]
    # On a CPU every CUDA test is collected and skipped, none fails.
    assert s["pytest"]["exit_code"] == 0 and s["pytest"]["tests"] > 0
    assert s["pytest"]["skipped"] == s["pytest"]["tests"] and not s["pytest"]["failures"]

    modes = {m["mode"]: m for m in s["inference"]["modes"]}
    assert list(modes) == list(tool.INFERENCE_MODES)
    assert modes["fp16"]["skipped"] == "fp16 inference needs CUDA"
    for name in ("reference", "fp32", "channels_last", "bf16"):
        assert [r["batch"] for r in modes[name]["rows"]] == [1, 2], name
        assert all(r["ours_clips_per_s"] > 0 and r["pytorchvideo_clips_per_s"] > 0 for r in modes[name]["rows"])
        assert modes[name]["top1_vs_ptv_fp32"] == 1.0
    # Same weights: the fp32 paths give PyTorchVideo's logits.
    assert modes["reference"]["max_abs_diff_vs_ptv_fp32"] < 1e-4 and modes["fp32"]["max_abs_diff_vs_ptv_fp32"] < 1e-4
    compiled = s["compile"]["modes"][0]
    assert compiled["mode"] == "compile" and compiled["rows"][0]["batch"] == 2
    assert compiled["max_abs_diff_vs_ptv_fp32"] < 1e-4 and set(compiled["dynamo"]) == {"ours", "pytorchvideo"}

    train = {p["precision"]: p for p in s["train"]["precisions"]}
    assert list(train) == ["fp32", "bf16", "fp16"] and "needs CUDA" in train["fp16"]["skipped"]
    assert train["fp32"]["max_abs_diff"] < 1e-4 and train["fp32"]["row"]["ours_ms"] > 0
    assert train["fp32"]["memory"] is None  # GPU memory only on a GPU

    runs = {(r["config"], r["precision"]): r for r in s["data"]["runs"]}
    assert set(runs) == {(c, p) for c in ("demo", "slow_r50") for p in ("fp32", "bf16")}
    for run in runs.values():
        assert run["resident_step_ms"] > 0 and run["loader_step_ms"] > 0 and 0 <= run["data_share"] < 1
        assert run["workers"] == 1
    assert all(runs[c, "fp32"]["loader_only_clips_per_s"] > 0 for c in ("demo", "slow_r50"))
    jpeg = s["data"]["jpeg_decode"]
    assert jpeg["clips"] == 2 and jpeg["cpu_ms_per_clip"] > 0
    assert jpeg["cuda_ms_per_clip"] is None and jpeg["cuda_error"] == "not run on CUDA"
    text = (out / "check_gpu.txt").read_text()
    for needle in ("where the time went", "inference: ours vs PyTorchVideo", "training step", "data path:",
                   "compile: ours vs PyTorchVideo", "frame-store JPEG decoding, 8 images of 340x256 at quality 90"):
        assert needle in text
    assert text.strip() in proc.stdout


def test_a_section_past_its_limit_is_stopped(tmp_path):
    tool = _tool()
    work = tmp_path / "work"
    work.mkdir()
    with open(tmp_path / "log.txt", "w") as log:
        start = time.monotonic()
        entry = tool.run_section("data", 1.5, ["--device", "cpu", "--quick", str(tmp_path / "out")], str(work), log)
    assert entry["status"] == "timeout" and entry["exit_code"] is None
    assert time.monotonic() - start < 20  # stopped, not waited for


def test_sections_that_do_not_fit_the_budget_are_skipped(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, TOOL, "--device", "cpu", "--quick", "--sections", "env,train",
                           "--budget", "10", str(out)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1  # not everything ran
    report = json.loads((out / "check_gpu.json").read_text())
    assert list(report["sections"]) == ["env", "train"]
    assert all(s["status"] == "skipped" and "out of budget" in s["reason"] for s in report["sections"].values())
    assert "skipped" in (out / "check_gpu.txt").read_text()


def test_unknown_section_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "--sections", "env,warp", str(tmp_path)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "warp" in proc.stderr


def test_shared_weights_at_224_px_give_both_models_the_same_logits(tmp_path):
    # Calibration clips of 112 px would not fill the 224 px head's 7x7 pooling window.
    from video_gc.bench.model import build_pytorchvideo_model, load_same_weights, shared_weights_file
    from video_gc.config import load_config
    from video_gc.models import build_model

    cfg = load_config(os.path.join(REPO, "configs/kinetics/SLOW_8x8_R50.yaml"),
                      ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4"])
    theirs = build_pytorchvideo_model("slow", depth=50, num_frames=4, crop=224, num_classes=5, width=2)
    path = shared_weights_file(theirs, str(tmp_path), crop=224, frames=4)
    ours = build_model(cfg)
    load_same_weights(ours, theirs, path)
    x = torch.randn(1, 3, 4, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = ours.eval()(x), theirs.eval()(x)
    assert a.shape == (1, 5) and (a - b).abs().max() < 1e-4
    assert b.std() > 0  # calibrated: not a constant output
