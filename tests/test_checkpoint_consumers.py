"""Every tool that takes a checkpoint reports numbers from the weights it names: the model config
stored in the checkpoint builds the model, NaN/inf weights are refused, exports go only where
they load, and demo_net's input errors are one clear line. The tools run as real processes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_engine_e2e import tiny_data  # noqa: F401 (the fixture: 4 classes, 16 train / 4 val / 4 test videos)

from video_gc.config import load_config
from video_gc.engine import checkpoint as cu
from video_gc.engine.launch import main as run_net
from video_gc.utils.io import atomic_save, safe_torch_load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, "configs", "demo", "SLOW_GC_DEMO.yaml")  # RESNET.WIDTH_PER_GROUP 8, 8 classes
# The training overrides that define the model; the tools below are not told them again.
MODEL_OPTS = ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "4"]


def data_opts(data_dir, out_dir, *extra):
    """Data, test and run settings only: what a user passes to every tool anyway."""
    return ["DATA.PATH_TO_DATA_DIR", data_dir, "OUTPUT_DIR", str(out_dir), "DATA.TRAIN_JITTER_SCALES", "[32, 36]",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4",
            "TEST.BATCH_SIZE", "2", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
            "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.EVAL_PERIOD", "10", "SOLVER.MAX_EPOCH", "1", *extra]


def _tool(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join("tools", name), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A checkpoint written by one epoch of training with ``--opts RESNET.WIDTH_PER_GROUP 4 MODEL.NUM_CLASSES 4``."""
    out = tmp_path_factory.mktemp("trained")
    assert run_net(["--cfg", CFG, "--opts", *data_opts(tiny_data, out, *MODEL_OPTS, "TEST.ENABLE", "False")]) == 0
    return cu.checkpoint_path(str(out), 0)


@pytest.fixture(scope="module")
def non_finite(trained, tmp_path_factory):
    """The trained checkpoint with one NaN and one inf weight."""
    state = cu.read_checkpoint(trained)
    state["model_state"]["res3.0.branch2.a.weight"][0, 0] = float("nan")
    state["model_state"]["head.projection.weight"][1, 1] = float("inf")
    path = str(tmp_path_factory.mktemp("broken") / "checkpoint_epoch_00001.pyth")
    atomic_save(state, path)
    return path


def _refusal(path):
    return f"checkpoint {path} holds non-finite weights: 2 of "


def _video(tiny_data):
    return os.path.join(tiny_data, "videos", "square_moving_left", "square_moving_left_0000.mp4")


# ---------------------------------------------------------------------------
# NaN / inf weights
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_non_finite_weights_are_refused_by_every_tool(tiny_data, non_finite, tmp_path):
    runs = {
        "test": _tool("run_net.py", "--cfg", CFG, "--opts", *data_opts(tiny_data, tmp_path / "test", *MODEL_OPTS),
                      "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", non_finite),
        "demo_net": _tool("demo_net.py", "--cfg", CFG, "--video", _video(tiny_data), "--checkpoint", non_finite,
                          "--opts", *data_opts(tiny_data, tmp_path / "demo", *MODEL_OPTS)),
        "convert": _tool("convert_checkpoint.py", "--cfg", CFG, "--opts", *MODEL_OPTS, "--input", non_finite,
                         "--output", tmp_path / "converted.pyth"),
        "analyze": _tool("analyze_context.py", "--cfg", CFG, "--checkpoint", non_finite, "--num-videos", "2",
                         "--output", tmp_path / "stats", "--opts", *data_opts(tiny_data, tmp_path / "a", *MODEL_OPTS)),
        "visualize": _tool("visualize_context.py", "--cfg", CFG, "--checkpoint", non_finite, "--output",
                           tmp_path / "pictures", "--opts", *data_opts(tiny_data, tmp_path / "v", *MODEL_OPTS)),
    }
    for tool, done in runs.items():
        text = done.stdout + done.stderr
        assert done.returncode != 0, f"{tool} scored NaN weights:\n{text[-2000:]}"
        assert _refusal(non_finite) in text and "the first is res3.0.branch2.a.weight" in text, (tool, text[-2000:])
        assert "Traceback" not in text and "top-1" not in text and "nan" not in done.stdout, tool
    assert not (tmp_path / "test" / "test_metrics.json").exists()
    assert not (tmp_path / "converted.pyth").exists()


@pytest.mark.slow
def test_fine_tuning_from_non_finite_weights_is_refused_before_training(tiny_data, non_finite, tmp_path):
    out = tmp_path / "fine_tune"
    opts = data_opts(tiny_data, out, *MODEL_OPTS, "TEST.ENABLE", "False", "TRAIN.CHECKPOINT_FILE_PATH", non_finite)
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 1
    log = (out / "log.txt").read_text()
    assert _refusal(non_finite) in log and "loss is" not in log
    assert not os.path.exists(cu.checkpoint_dir(str(out)))


@pytest.mark.slow
def test_resuming_from_non_finite_weights_names_the_file_not_the_learning_rate(tiny_data, non_finite, tmp_path):
    out = tmp_path / "resume"
    os.makedirs(cu.checkpoint_dir(str(out)))
    resumed = cu.checkpoint_path(str(out), 0)
    shutil.copy(non_finite, resumed)
    opts = data_opts(tiny_data, out, *MODEL_OPTS, "TEST.ENABLE", "False", "SOLVER.MAX_EPOCH", "2")
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 1
    log = (out / "log.txt").read_text()
    assert _refusal(resumed) in log
    assert "loss is" not in log and "last good checkpoint" not in log and "SOLVER.BASE_LR" not in log
    assert os.listdir(cu.checkpoint_dir(str(out))) == ["checkpoint_epoch_00001.pyth"]


# ---------------------------------------------------------------------------
# The model config stored in the checkpoint
# ---------------------------------------------------------------------------
def _taken_line(path):
    return (f"model config taken from checkpoint {path}; it differs from the --cfg file in "
            f"MODEL.NUM_CLASSES (--cfg 8, checkpoint 4), RESNET.WIDTH_PER_GROUP (--cfg 8, checkpoint 4)")


@pytest.mark.slow
def test_test_only_run_builds_the_model_the_checkpoint_stores(tiny_data, trained, tmp_path):
    plain = tmp_path / "plain"
    done = _tool("run_net.py", "--cfg", CFG, "--opts", *data_opts(tiny_data, plain), "TRAIN.ENABLE", "False",
                 "TEST.CHECKPOINT_FILE_PATH", trained)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stderr.count("model config taken from checkpoint") == 1 and _taken_line(trained) in done.stderr
    metrics = json.loads((plain / "test_metrics.json").read_text())
    assert metrics["checkpoint"] == os.path.abspath(trained) and metrics["videos_evaluated"] == 4

    # The same scores as a run told every training override again.
    repeated = tmp_path / "repeated"
    assert run_net(["--cfg", CFG, "--opts", *data_opts(tiny_data, repeated, *MODEL_OPTS), "TRAIN.ENABLE", "False",
                    "TEST.CHECKPOINT_FILE_PATH", trained]) == 0
    np.testing.assert_array_equal(np.load(plain / "predictions.npz")["scores"],
                                  np.load(repeated / "predictions.npz")["scores"])


@pytest.mark.slow
def test_an_explicit_override_wins_and_a_conflict_is_a_short_shape_error(tiny_data, trained, tmp_path):
    done = _tool("run_net.py", "--cfg", CFG, "--opts", *data_opts(tiny_data, tmp_path), "TRAIN.ENABLE", "False",
                 "TEST.CHECKPOINT_FILE_PATH", trained, "RESNET.WIDTH_PER_GROUP", "8")
    assert done.returncode == 1
    assert "--opts kept RESNET.WIDTH_PER_GROUP 8 (checkpoint 4)" in done.stderr
    errors = [line for line in done.stdout.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and len(errors[0]) < 800, errors
    assert f"{trained} does not match the model built from the config: shape mismatch" in errors[0]
    assert "stem.conv.weight: checkpoint (4, 3, 1, 7, 7) vs model (8, 3, 1, 7, 7)" in errors[0]
    assert not (tmp_path / "test_metrics.json").exists()


@pytest.mark.slow
def test_demo_net_convert_and_analysis_tools_read_the_stored_model_config(tiny_data, trained, tmp_path):
    demo = _tool("demo_net.py", "--cfg", CFG, "--video", _video(tiny_data), "--checkpoint", trained,
                 "--opts", *data_opts(tiny_data, tmp_path / "demo"))
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert demo.stdout.startswith(f"{_video(tiny_data)} (2 views, weights {trained}):")
    assert len([line for line in demo.stdout.splitlines() if line.startswith("  ")]) == 4  # the 4 trained classes
    assert demo.stderr.strip() == _taken_line(trained)

    converted = tmp_path / "converted.pyth"
    convert = _tool("convert_checkpoint.py", "--cfg", CFG, "--input", trained, "--output", converted, "--strict")
    assert convert.returncode == 0, convert.stderr[-2000:]
    assert _taken_line(trained) in convert.stderr
    written = safe_torch_load(str(converted))
    assert load_config(CFG).RESNET.WIDTH_PER_GROUP == 8
    assert "WIDTH_PER_GROUP: 4" in written["cfg"] and "NUM_CLASSES: 4" in written["cfg"]
    for key, value in cu.read_checkpoint(trained)["model_state"].items():
        assert torch.equal(written["model_state"][key], value), key

    opts = data_opts(tiny_data, tmp_path / "analysis")
    analyze = _tool("analyze_context.py", "--cfg", CFG, "--checkpoint", trained, "--num-videos", "2",
                    "--output", tmp_path / "stats", "--opts", *opts)
    assert analyze.returncode == 0, analyze.stderr[-2000:]
    assert f"weights from {trained}" in analyze.stdout and (tmp_path / "stats" / "context_stats.json").is_file()
    visualize = _tool("visualize_context.py", "--cfg", CFG, "--checkpoint", trained, "--output",
                      tmp_path / "pictures", "--opts", *opts)
    assert visualize.returncode == 0, visualize.stderr[-2000:]
    assert os.listdir(tmp_path / "pictures")


# ---------------------------------------------------------------------------
# Export to PyTorchVideo
# ---------------------------------------------------------------------------
def test_export_to_pytorchvideo_refuses_an_arch_it_has_no_model_of(tmp_path):
    from video_gc.models import build_model

    opts = ["MODEL.ARCH", "c2d_nl32", "DATA.NUM_FRAMES", "8", *MODEL_OPTS]
    cfg = load_config(None, opts)
    source = cu.save_checkpoint(str(tmp_path), 0, build_model(cfg), cfg=cfg)
    out = tmp_path / "c2d_nl32_layout.pyth"
    done = _tool("convert_checkpoint.py", "--opts", *opts, "--input", source, "--output", out, "--to", "pytorchvideo")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: cannot export MODEL.ARCH c2d_nl32 to PyTorchVideo: it has no such model; the archs that export "
        "are slow (slow_r50), c2d (c2d_r50), i3d (i3d_r50)")
    assert not out.exists()


def test_an_arch_alias_exports_as_the_arch_it_names():
    from video_gc.models.weights import pytorchvideo_builder

    assert pytorchvideo_builder("slowonly") == pytorchvideo_builder("slow") == "slow_r50"
    with pytest.raises(ValueError, match="c2d_nopool"):
        pytorchvideo_builder("c2d_nopool")


# ---------------------------------------------------------------------------
# demo_net --video: one line for what is not a video
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["folder", "text", "truncated"])
def test_demo_net_says_in_one_line_what_is_not_a_video(kind, trained, tiny_data, tmp_path):
    if kind == "folder":
        video, reason = str(tmp_path), "it is a folder; give a video file"
    elif kind == "text":
        video, reason = str(tmp_path / "notes.txt"), "it is not a readable video ("
        (tmp_path / "notes.txt").write_text("not a video\n")
    else:  # the first KiB of a real mp4: no moov atom
        video, reason = str(tmp_path / "cut.mp4"), "it is not a readable video ("
        with open(_video(tiny_data), "rb") as f:
            (tmp_path / "cut.mp4").write_bytes(f.read(1024))
    done = _tool("demo_net.py", "--cfg", CFG, "--video", video, "--checkpoint", trained,
                 "--opts", *data_opts(tiny_data, tmp_path / "out", *MODEL_OPTS))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()  # no decoder messages around it
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot classify {video}: {reason}"), done.stderr


def test_a_checkpoint_of_an_earlier_version_loads_with_its_own_na_form(tmp_path):
    """Version-1 checkpoints store GC.FUSION as a string and no NA.STD_FORM: the tools still build
    the model, with the NA form it was trained with."""
    import yaml

    import torch

    from video_gc.config import get_cfg
    from video_gc.engine.common import model_config_from_checkpoint
    from video_gc.models import build_model

    opts = ["CONTEXT.TYPE", "na", "CONTEXT.LOCATION", "[[0], [], [], []]", *MODEL_OPTS]
    cfg = load_config(None, opts + ["CONTEXT.NA.STD_FORM", "biased"])
    path = cu.save_checkpoint(str(tmp_path), 0, build_model(cfg), cfg=cfg)
    stored = yaml.safe_load(get_cfg().dump())
    for key in ("CONFIG_VERSION",):
        del stored[key]
    del stored["CONTEXT"]["NA"]["STD_FORM"], stored["CONTEXT"]["GC"]["ZERO_INIT"]
    stored["CONTEXT"]["GC"]["FUSION"] = "add"
    stored["CONTEXT"]["TYPE"], stored["CONTEXT"]["LOCATION"] = "na", [[0], [], [], []]
    stored["MODEL"]["NUM_CLASSES"], stored["RESNET"]["WIDTH_PER_GROUP"] = cfg.MODEL.NUM_CLASSES, cfg.RESNET.WIDTH_PER_GROUP
    state = torch.load(path, weights_only=True)
    state["cfg"] = yaml.safe_dump(stored)
    torch.save(state, path)
    out = model_config_from_checkpoint(load_config(None), path)
    assert (out.CONTEXT.TYPE, out.CONTEXT.NA.STD_FORM, out.CONTEXT.GC.FUSION) == ("na", "biased", ["add"])


def test_tools_name_the_preprocessing_keys_that_differ_from_the_checkpoints(tmp_path, caplog):
    import logging

    from video_gc.engine.common import warn_if_preprocessing_differs
    from video_gc.models import build_model

    trained = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "DATA.SAMPLING_RATE", "8"])
    path = cu.save_checkpoint(str(tmp_path), 0, build_model(trained), cfg=trained)
    with caplog.at_level(logging.WARNING, logger="video_gc"):
        assert warn_if_preprocessing_differs(trained, path, "advice") == []
        used = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "DATA.SAMPLING_RATE", "4", "DATA.TEST_CROP_SIZE",
                                  "224"])
        differ = warn_if_preprocessing_differs(used, path, "pass the training config with --cfg")
    assert differ == ["DATA.SAMPLING_RATE (config 4, checkpoint 8)", "DATA.TEST_CROP_SIZE (config 224, checkpoint 256)"]
    assert f"other settings than {path} was trained with: DATA.SAMPLING_RATE" in caplog.text
    assert caplog.text.count("pass the training config with --cfg") == 1
