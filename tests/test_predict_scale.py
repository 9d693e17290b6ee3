"""Prediction at scale (tools/demo_net.py --videos / --list / --window): a folder's CSV rows are the
single-file predictions, unreadable files are skipped and named, and sliding windows cover a video
of known duration with the expected count, starts and clips."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_features import MODEL_OPTS, TEST_OPTS, _write_videos, setup  # noqa: F401 (setup: the fixture)

from video_gc.config import load_config
from video_gc.data import VideoDataset
from video_gc.data.lists import write_classids
from video_gc.engine.checkpoint import read_checkpoint
from video_gc.engine.predict import (EXIT_CONFIG, EXIT_OK, EXIT_SKIPPED, main_predict, predict_video,
                                     window_frame_ids, window_starts)
from video_gc.models import build_model
from video_gc.utils.video_io import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["walking", "running", "jumping"]


@pytest.fixture
def run_args(setup, tmp_path):  # noqa: F811 (the imported fixture)
    """A config file, the --opts (test settings and the folder of classids.json) and the checkpoint."""
    data = tmp_path / "data"
    data.mkdir()
    write_classids(str(data / "classids.json"), NAMES)
    cfg_file = tmp_path / "predict.yaml"
    cfg_file.write_text("NUM_GPUS: 0\n")
    return {"cfg": str(cfg_file), "opts": TEST_OPTS + ["DATA.PATH_TO_DATA_DIR", str(data)], "ckpt": setup["ckpt"]}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_a_folder_gives_the_single_file_predictions_and_skips_bad_files(run_args, tmp_path, capsys):
    folder = tmp_path / "videos"
    good = _write_videos(str(folder), 3, seed=2)
    (folder / "notes.mp4").write_text("not a video\n")
    with open(good[0], "rb") as f:
        (folder / "cut.mp4").write_bytes(f.read(1024))  # the first KiB of a real mp4: no moov atom
    out = tmp_path / "pred.csv"
    done = subprocess.run([sys.executable, "tools/demo_net.py", "--cfg", run_args["cfg"], "--videos", str(folder),
                           "--checkpoint", run_args["ckpt"], "--output", str(out), "--opts", *run_args["opts"]],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SKIPPED, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"{out}: 3 rows for 3 of 5 videos; 2 skipped (listed on stderr)"
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
    assert [line.split(": ")[0] for line in skipped] == [f"skipped {folder / 'cut.mp4'}",
                                                         f"skipped {folder / 'notes.mp4'}"]
    assert all(": it is not a readable video (" in line for line in skipped)

    rows = _read_csv(out)
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]  # 3 classes
    assert [row[0] for row in rows[1:]] == good
    cfg = load_config(run_args["cfg"], run_args["opts"])
    for row in rows[1:]:
        single = predict_video(cfg, row[0], checkpoint=run_args["ckpt"], top_k=5, opts=run_args["opts"])
        assert row[1::2] == [name for name, _ in single["top"]]
        np.testing.assert_allclose([float(s) for s in row[2::2]], [s for _, s in single["top"]], atol=1e-6)

    # The same files as a list give the same file, and the same exit status.
    listed = tmp_path / "list.csv"
    listed.write_text("".join(f"{p} 0\n" for p in [*good, folder / "cut.mp4", folder / "notes.mp4"]))
    assert main_predict(run_args["cfg"], list_file=str(listed), output=str(tmp_path / "list_pred.csv"),
                        checkpoint=run_args["ckpt"], opts=run_args["opts"]) == EXIT_SKIPPED
    assert _read_csv(tmp_path / "list_pred.csv") == rows
    assert capsys.readouterr().err.count("skipped ") == 2


def test_window_starts_count_and_tail():
    # floor((duration - window) / stride) + 1 windows; the tail shorter than a stride has none of its own.
    assert window_starts(3.0, 1.0, 0.5) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert window_starts(3.3, 1.0, 0.5) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert window_starts(3.0, 1.0, 0.3) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
    assert window_starts(10.0, 4.0, 4.0) == [0.0, 4.0]
    assert window_starts(0.8, 1.0, 0.5) == [0.0]  # shorter than a window: one window
    with pytest.raises(ValueError):
        window_starts(3.0, 1.0, 0.0)


def test_a_window_clip_is_the_centre_clip_of_its_window():
    fps, frames, rate, target = 25.0, 4, 2, 30.0
    span = frames * rate * fps / target  # 6.67 source frames
    for start in window_starts(3.0, 1.0, 0.5):
        first = start * fps + (1.0 * fps - span) / 2
        expected = np.floor(np.linspace(first, first + span - 1, frames) + 1e-6).astype(int)
        got = window_frame_ids(start, 1.0, video_frames=75, fps=fps, num_frames=frames, sampling_rate=rate,
                               target_fps=target)
        assert got.tolist() == expected.tolist()
        assert start * fps <= got.min() and got.max() < (start + 1.0) * fps


def test_sliding_windows_over_a_video_of_known_duration(run_args, tmp_path, capsys):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, size=(75, 48, 64, 3), dtype=np.uint8)
    long_video = write_video(str(tmp_path / "long.mp4"), frames, fps=25.0)  # 3.00 s
    one_window = write_video(str(tmp_path / "one.mp4"), frames[:25], fps=25.0)  # 1.00 s: exactly one window
    listed = tmp_path / "list.csv"
    listed.write_text(f"{long_video} 0\n{one_window} 0\n")
    out = tmp_path / "windows.csv"
    assert main_predict(run_args["cfg"], list_file=str(listed), output=str(out), window=1.0, stride=0.5,
                        checkpoint=run_args["ckpt"], opts=run_args["opts"]) == EXIT_OK
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{out}: 6 rows for 2 of 2 videos"
    rows = _read_csv(out)
    assert rows[0][:3] == ["path", "start_s", "end_s"]
    assert [row[:3] for row in rows[1:]] == [
        [long_video, "0.000", "1.000"], [long_video, "0.500", "1.500"], [long_video, "1.000", "2.000"],
        [long_video, "1.500", "2.500"], [long_video, "2.000", "3.000"], [one_window, "0.000", "1.000"]]
    for row in rows[1:]:
        assert sorted(row[3::2]) == sorted(NAMES) and sum(float(s) for s in row[4::2]) == pytest.approx(1, abs=1e-5)

    # An unreadable file in the list is skipped, with no rows; the others are written.
    (tmp_path / "notes.mp4").write_text("not a video\n")
    listed.write_text(f"{tmp_path / 'notes.mp4'} 0\n{one_window} 0\n")
    assert main_predict(run_args["cfg"], list_file=str(listed), output=str(tmp_path / "some.csv"), window=1.0,
                        stride=0.5, checkpoint=run_args["ckpt"], opts=run_args["opts"]) == EXIT_SKIPPED
    assert _read_csv(tmp_path / "some.csv") == [rows[0], rows[-1]]
    assert f"skipped {tmp_path / 'notes.mp4'}: it is not a readable video (" in capsys.readouterr().err

    # The one window of a video as long as the window is the val split's centre view of it.
    data = tmp_path / "val_data"
    data.mkdir()
    (data / "val.csv").write_text(f"{one_window} 0\n")
    cfg = load_config(None, MODEL_OPTS + TEST_OPTS + ["DATA.PATH_TO_DATA_DIR", str(data)])
    model = build_model(cfg)
    model.load_state_dict(read_checkpoint(run_args["ckpt"])["model_state"])
    with torch.no_grad():
        probs = torch.softmax(model.eval()(VideoDataset(cfg, "val")[0]["inputs"][None]), dim=-1)[0]
    got = dict(zip(rows[-1][3::2], map(float, rows[-1][4::2])))
    np.testing.assert_allclose([got[name] for name in NAMES], probs.tolist(), atol=1e-5)

    # A window shorter than one clip (4 x 2 frames at 30 fps: 0.267 s) is refused.
    assert main_predict(run_args["cfg"], long_video, output=str(tmp_path / "short.csv"), window=0.2, stride=0.1,
                        checkpoint=run_args["ckpt"], opts=run_args["opts"]) == EXIT_CONFIG
    assert "error: --window 0.2 s is shorter than one clip (0.266667 s" in capsys.readouterr().err
    assert not (tmp_path / "short.csv").exists()


def test_frame_stores_are_predicted_and_their_features_extracted(run_args, setup, tmp_path):
    """With DATA.FORMAT frames, a folder of frame stores, one store, a store's windows and feature
    extraction all read the stores; the scores are the source videos' up to JPEG error."""
    from video_gc.features import EXIT_OK as FEATURES_OK
    from video_gc.features import load_features, main_extract
    from video_gc.prep.frame_store import make_frame_store

    sources = _write_videos(str(tmp_path / "src" / "videos"), 2, seed=4)
    (tmp_path / "src" / "all.csv").write_text("".join(f"{p} 0\n" for p in sources))
    make_frame_store([str(tmp_path / "src" / "all.csv")], str(tmp_path / "stores"), verbose=False)
    stores = sorted(str(p) for p in (tmp_path / "stores").rglob("*.frames"))
    assert len(stores) == 2
    frames = run_args["opts"] + ["DATA.FORMAT", "frames"]

    out = tmp_path / "pred.csv"
    assert main_predict(run_args["cfg"], videos=str(tmp_path / "stores"), output=str(out),
                        checkpoint=run_args["ckpt"], opts=frames) == EXIT_OK
    rows = _read_csv(out)[1:]
    assert [row[0] for row in rows] == stores
    cfg = load_config(run_args["cfg"], run_args["opts"])
    for row, source in zip(rows, sources):
        video = predict_video(cfg, source, checkpoint=run_args["ckpt"], opts=run_args["opts"])
        store = predict_video(load_config(run_args["cfg"], frames), row[0], checkpoint=run_args["ckpt"], opts=frames)
        np.testing.assert_allclose([float(s) for s in row[2::2]], [s for _, s in store["top"]], atol=1e-6)
        np.testing.assert_allclose(sorted(s for _, s in store["top"]), sorted(s for _, s in video["top"]), atol=0.05)

    windows = tmp_path / "windows.csv"
    assert main_predict(run_args["cfg"], stores[0], output=str(windows), window=0.3, stride=0.3,
                        checkpoint=run_args["ckpt"], opts=frames) == EXIT_OK
    assert len(_read_csv(windows)) == 1 + 2  # 20 frames at 30 fps: two windows of 0.3 s

    features = tmp_path / "features"
    assert main_extract(checkpoint=run_args["ckpt"], output=str(features), videos=str(tmp_path / "stores"),
                        opts=TEST_OPTS + ["DATA.FORMAT", "frames"]) == FEATURES_OK
    assert load_features(str(features)).paths == stores
