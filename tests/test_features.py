"""Feature extraction (tools/extract_features.py): the features are the model's forward_features on
the test views, a killed run resumes without redoing finished videos, two torchrun processes write
every video once, and unreadable files are reported while the others are written."""

import csv
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from video_gc.config import load_config
from video_gc.data import VideoDataset
from video_gc.engine.checkpoint import read_checkpoint, save_checkpoint
from video_gc.features import EXIT_INCOMPLETE, EXIT_OK, load_features, main_extract
from video_gc.models import build_model
from video_gc.utils.video_io import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The model is defined by the checkpoint; the tools are only given the test settings.
MODEL_OPTS = ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3"]
TEST_OPTS = ["DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE",
             "32", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3", "TEST.BATCH_SIZE", "2",
             "DATA_LOADER.NUM_WORKERS", "0", "NUM_GPUS", "0"]
NUM_VIDEOS = 6
VIEWS = 6


def _write_videos(folder, count, seed=0):
    """``count`` small real H.264 files of 20 frames (30 fps), each a different moving pattern."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, size=(1, 48, 64, 3), dtype=np.uint8)
        ramp = (np.arange(20)[:, None, None, None] * (5 + 3 * i)) % 256
        paths.append(write_video(os.path.join(folder, f"clip_{i}.mp4"), ((base + ramp) % 256).astype(np.uint8)))
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Videos, a test list of them (labels 0..2) and a checkpoint of a tiny model with every weight
    moved off its init (so the context-free trunk and the head all take part)."""
    root = tmp_path_factory.mktemp("features")
    paths = _write_videos(str(root / "videos"), NUM_VIDEOS)
    data = root / "data"
    data.mkdir()
    (data / "test.csv").write_text("".join(f"{p} {i % 3}\n" for i, p in enumerate(paths)))
    cfg = load_config(None, MODEL_OPTS + TEST_OPTS)
    model = build_model(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    ckpt = save_checkpoint(str(root / "run"), 0, model, cfg=cfg)
    return {"root": root, "paths": paths, "list": str(data / "test.csv"), "data": str(data), "ckpt": ckpt}


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _tool_args(setup, output, *extra, chunk_size=2):
    return ["tools/extract_features.py", "--checkpoint", setup["ckpt"], "--list", setup["list"], "--output",
            str(output), "--chunk-size", str(chunk_size), *extra, "--opts", *TEST_OPTS]


def _chunk_rows(output):
    """{chunk csv name: [list indices]} of the committed chunks."""
    found = {}
    for path in glob.glob(os.path.join(output, "chunks", "*.csv")):
        with open(path, newline="") as f:
            found[os.path.basename(path)] = [int(r["index"]) for r in csv.DictReader(f)]
    return found


def test_features_are_forward_features_of_the_test_views(setup, tmp_path, capsys):
    out = tmp_path / "features"
    assert main_extract(checkpoint=setup["ckpt"], output=str(out), list_file=setup["list"], chunk_size=4,
                        opts=TEST_OPTS) == EXIT_OK
    got = load_features(str(out), views=True)
    assert got.paths == setup["paths"] and got.index.tolist() == list(range(NUM_VIDEOS))
    assert got.labels.tolist() == [i % 3 for i in range(NUM_VIDEOS)]
    assert sorted(_chunk_rows(str(out))) == ["chunk_000000000.csv", "chunk_000000004.csv"]

    # Reference, computed apart from the tool: the checkpoint's model (built from the model keys it was
    # trained with) in eval mode, forward_features on the views of the test dataset.
    cfg = load_config(None, MODEL_OPTS + TEST_OPTS + ["DATA.PATH_TO_DATA_DIR", setup["data"]])
    model = build_model(cfg)
    model.load_state_dict(read_checkpoint(setup["ckpt"])["model_state"])
    model.eval()
    dataset = VideoDataset(cfg, "test")
    with torch.no_grad():
        expected = torch.stack([model.forward_features(dataset.decode_views(i)) for i in range(NUM_VIDEOS)]).numpy()
    assert got.views.shape == (NUM_VIDEOS, VIEWS, model.head.projection.in_features) == expected.shape
    # The tool runs the BN-folded fp32 inference model: the same numbers up to float rounding.
    np.testing.assert_allclose(got.views, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.pooled, got.views.astype(np.float64).mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.pooled, expected.mean(axis=1), rtol=1e-4, atol=1e-5)
    assert np.abs(got.pooled).max() > 1e-3  # real features, not a zero-init trunk

    # Fewer views go to another folder; the same folder refuses other settings instead of mixing them.
    one_view = ["TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1"]
    assert main_extract(checkpoint=setup["ckpt"], output=str(tmp_path / "one"), list_file=setup["list"],
                        opts=TEST_OPTS + one_view) == EXIT_OK
    assert load_features(str(tmp_path / "one"), views=True).views.shape == (NUM_VIDEOS, 1, expected.shape[2])
    capsys.readouterr()
    assert main_extract(checkpoint=setup["ckpt"], output=str(out), list_file=setup["list"],
                        opts=TEST_OPTS + one_view) == 1
    assert capsys.readouterr().err == (f"error: {out} holds features of another run: TEST.NUM_ENSEMBLE_VIEWS "
                                       f"(folder 2, now 1); TEST.NUM_SPATIAL_CROPS (folder 3, now 1). Choose another "
                                       f"--output, or delete the folder to start again\n")
    assert not (out / "extract.lock").exists()


# Runs the real extraction in a process that SIGKILLs itself at a set point: after chunks 0 and 1 are
# committed, once chunk 2's per-view file is written but before its means and its .csv are.
_KILLED_RUN = """
import os, signal, sys
import video_gc.features as features
saved, real_save = [], features._save_npy
def save_then_die(path, array):
    real_save(path, array)
    saved.append(path)
    if len(saved) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
features._save_npy = save_then_die
sys.exit(features.main_extract(checkpoint=sys.argv[1], list_file=sys.argv[2], output=sys.argv[3], chunk_size=1,
                               opts=sys.argv[4:]))
"""


@pytest.mark.slow
def test_a_killed_extraction_resumes_without_redoing_finished_videos(setup, tmp_path, capsys):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, setup["ckpt"], setup["list"], str(out),
                             *TEST_OPTS], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _chunk_rows(str(out)) == {"chunk_000000000.csv": [0], "chunk_000000001.csv": [1]}
    assert os.path.isfile(out / "chunks" / "chunk_000000002.views.npy")  # an uncommitted chunk
    assert not (out / "index.csv").exists() and (out / "extract.lock").exists()
    finished = {path: (os.stat(path).st_ino, os.stat(path).st_mtime_ns)
                for path in glob.glob(str(out / "chunks" / "chunk_00000000[01].*"))}
    assert len(finished) == 6

    done = subprocess.run([sys.executable, *_tool_args(setup, out, chunk_size=1)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{NUM_VIDEOS} videos: 2 already extracted, {NUM_VIDEOS - 2} to extract by 1 process(es)" in done.stdout
    assert "took over the lock of a run that stopped" in done.stdout
    assert f"features of {NUM_VIDEOS} of {NUM_VIDEOS} videos in {out}/index.csv (4 extracted by this run)" \
        in done.stdout
    # The videos finished before the kill were not written again: same files, same inodes and times.
    assert {path: (os.stat(path).st_ino, os.stat(path).st_mtime_ns) for path in finished} == finished
    assert sorted(i for rows in _chunk_rows(str(out)).values() for i in rows) == list(range(NUM_VIDEOS))
    assert not glob.glob(str(out / "chunks" / "*.partial")) and not (out / "extract.lock").exists()
    assert len(glob.glob(str(out / "chunks" / "*.npy"))) == 2 * NUM_VIDEOS
    assert load_features(str(out)).pooled.shape[0] == NUM_VIDEOS

    # A second rerun has nothing left to do.
    assert main_extract(checkpoint=setup["ckpt"], output=str(out), list_file=setup["list"], chunk_size=1,
                        opts=TEST_OPTS) == EXIT_OK
    assert f"{NUM_VIDEOS} already extracted, 0 to extract" in capsys.readouterr().out


@pytest.mark.slow
def test_two_torchrun_processes_write_every_video_once(setup, tmp_path):
    out = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *_tool_args(setup, out)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Process 0 took the even list indices, process 1 the odd ones, two per chunk: each video in one chunk.
    assert _chunk_rows(str(out)) == {"chunk_000000000.csv": [0, 2], "chunk_000000004.csv": [4],
                                     "chunk_000000001.csv": [1, 3], "chunk_000000005.csv": [5]}
    got = load_features(str(out), views=True)
    assert got.index.tolist() == list(range(NUM_VIDEOS)) and got.paths == setup["paths"]
    single = tmp_path / "single"
    assert main_extract(checkpoint=setup["ckpt"], output=str(single), list_file=setup["list"],
                        opts=TEST_OPTS) == EXIT_OK
    np.testing.assert_allclose(got.views, load_features(str(single), views=True).views, rtol=1e-5, atol=1e-6)


def test_unreadable_files_are_reported_and_the_others_written(setup, tmp_path, capsys):
    folder = tmp_path / "videos"
    good = _write_videos(str(folder), 2, seed=1)
    (folder / "notes.mp4").write_text("not a video\n")
    with open(good[0], "rb") as f:
        (folder / "cut.mp4").write_bytes(f.read(1024))  # the first KiB of a real mp4: no moov atom
    out = tmp_path / "features"
    status = main_extract(checkpoint=setup["ckpt"], output=str(out), videos=str(folder), opts=TEST_OPTS)
    assert status == EXIT_INCOMPLETE
    got = load_features(str(out))
    assert got.paths == good and got.labels.tolist() == [-1, -1] and got.pooled.shape[0] == 2
    with open(out / "failed.csv", newline="") as f:
        failed = list(csv.DictReader(f))
    # find_videos sorts: clip_0, clip_1, cut, notes.
    assert [(r["index"], r["path"]) for r in failed] == [("2", str(folder / "cut.mp4")),
                                                         ("3", str(folder / "notes.mp4"))]
    assert all(r["reason"].startswith("it is not a readable video (") for r in failed)
    log = capsys.readouterr().out
    assert "features of 2 of 4 videos" in log and "2 could not be read: listed in" in log
    # A rerun retries only the unreadable files.
    status = main_extract(checkpoint=setup["ckpt"], output=str(out), videos=str(folder), opts=TEST_OPTS)
    assert status == EXIT_INCOMPLETE
    assert "4 videos: 2 already extracted, 2 to extract" in capsys.readouterr().out
