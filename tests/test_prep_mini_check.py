"""Mini-Kinetics lists over a prepared Kinetics folder, and check_videos on bad entries."""

import os
import subprocess
import sys

import pytest

from prep_helpers import broken_files, ramp_video
from video_gc.data.lists import read_classids, read_list
from video_gc.prep.check import check_list
from video_gc.prep.kinetics import prepare_kinetics
from video_gc.prep.lists import PrepError
from video_gc.prep.mini_kinetics import prepare_mini_kinetics, youtube_id

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CSV = '''label,youtube_id,time_start,time_end,split
abseiling,aaaaaaaaa01,0,10,train
"passing American football (in game)",bbbbbbbbb02,0,10,train
"massaging person's head",ccccccccc03,0,10,train
"passing American football (in game)",ddddddddd04,0,10,train
'''
VAL_CSV = '''label,youtube_id,time_start,time_end,split
"massaging person's head",eeeeeeeee05,0,10,val
abseiling,fffffffff06,0,10,val
'''


@pytest.fixture(scope="module")
def kinetics_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k")
    (tmp / "train.csv").write_text(TRAIN_CSV)
    (tmp / "validate.csv").write_text(VAL_CSV)
    for i, yid in enumerate(["aaaaaaaaa01", "bbbbbbbbb02", "ccccccccc03", "ddddddddd04", "eeeeeeeee05", "fffffffff06"]):
        ramp_video(tmp / "raw" / f"{yid}_000000_000010.mp4", base=10 * i)
    out = tmp / "k400"
    prepare_kinetics([str(tmp / "train.csv"), str(tmp / "validate.csv")], str(tmp / "raw"), str(out), short_side=32,
                     verbose=False)
    return str(out)


def test_id_line_formats():
    for line in ("aaaaaaaaa01", "aaaaaaaaa01_000010_000020", "train/aaaaaaaaa01_000010_000020.mp4",
                 "x\\aaaaaaaaa01.mp4", "aaaaaaaaa01.webm.mp4"):
        assert youtube_id(line) == "aaaaaaaaa01"


def test_mini_kinetics_exact_lists(kinetics_dir, tmp_path, capsys):
    mini = tmp_path / "mini"
    (tmp_path / "classes.txt").write_text("# Mini-Kinetics classes\npassing American football (in game)\n"
                                          "\"massaging person's head\"\n")
    (tmp_path / "train_ids.txt").write_text("bbbbbbbbb02\nccccccccc03_000000_000010,massaging\n"
                                            "aaaaaaaaa01\nzzzzzzzzz99\nddddddddd04.mp4 x\n")
    (tmp_path / "val_ids.txt").write_text("eeeeeeeee05\n")
    args = [str(tmp_path / "classes.txt"), str(tmp_path / "train_ids.txt"), str(tmp_path / "val_ids.txt"),
            kinetics_dir, str(mini)]
    summary = prepare_mini_kinetics(*args)
    assert read_classids(str(mini / "classids.json")) == ["passing American football (in game)",
                                                          "massaging person's head"]
    rel = os.path.relpath(os.path.join(kinetics_dir, "videos"), mini)
    assert read_list(str(mini / "train.csv")) == [
        (f"{rel}/passing_American_football_in_game/bbbbbbbbb02_000000_000010.mp4", 0),
        (f"{rel}/massaging_person_s_head/ccccccccc03_000000_000010.mp4", 1),
        (f"{rel}/passing_American_football_in_game/ddddddddd04_000000_000010.mp4", 0),
    ]
    assert read_list(str(mini / "val.csv")) == read_list(str(mini / "test.csv")) == [
        (f"{rel}/massaging_person_s_head/eeeeeeeee05_000000_000010.mp4", 1)]
    assert summary["splits"]["train"] == {"annotated": 5, "listed": 3, "missing": 1, "failed": 1}
    report = open(mini / "report.csv").read()
    assert "zzzzzzzzz99" in report and "train_ids.txt:4" in report and "'abseiling' is not in" in report

    from video_gc.config import get_cfg
    from video_gc.data import build_dataset

    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = str(mini), 2
    assert all(os.path.isfile(p) for p in build_dataset(cfg, "train").paths)

    capsys.readouterr()
    assert prepare_mini_kinetics(*args)["unchanged"]
    assert "nothing to do" in capsys.readouterr().out
    (tmp_path / "classes.txt").write_text("abseiling\nskydiving\n")
    with pytest.raises(PrepError, match=r"classes\.txt:2: label 'skydiving' is not a class"):
        prepare_mini_kinetics(*args)


def test_check_videos_cleans_a_list(tmp_path):
    data = tmp_path / "data"
    ramp_video(data / "videos" / "ok.mp4", num_frames=12)
    ramp_video(data / "videos" / "short.mp4", num_frames=4)
    broken_files(str(data / "videos"))
    (data / "videos" / "notes.txt").write_text("x")
    lines = ["videos/ok.mp4 0", "videos/short.mp4 1", "videos/zero.mp4 0", "videos/text.mp4 2",
             "videos/trunc.mp4 1", "videos/gone.mp4 0"]
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    summary = check_list(str(data / "train.csv"), min_frames=8, verbose=False)
    assert (summary["entries"], summary["kept"], summary["missing"], summary["unreadable"], summary["too-short"]) == \
        (6, 1, 1, 3, 1)
    assert open(data / "train.clean.csv").read() == "videos/ok.mp4 0\n"
    # the distribution covers every decodable video (the short one included)
    assert summary["frames"] == "min 4 / p5 4.4 / median 8 / p95 11.6 / max 12"
    assert summary["fps"].startswith("min 10 ") and summary["duration"].endswith("max 1.2")
    report = open(data / "train.clean.report.csv").read()
    assert "train.csv:2" in report and "4 frames < 8" in report
    assert "videos/zero.mp4,train.csv:3" in report.replace(str(data) + "/", "")
    # a cleaned list written elsewhere gets paths that still resolve
    elsewhere = tmp_path / "other" / "train.csv"
    check_list(str(data / "train.csv"), output=str(elsewhere), min_frames=1, backend="decord", verbose=False)
    assert open(elsewhere).read() == "../data/videos/ok.mp4 0\n../data/videos/short.mp4 1\n"

    script = os.path.join(REPO, "data_prep", "check_videos.py")
    run = subprocess.run([sys.executable, script, "--list", str(data / "train.csv"), "--min-frames", "8",
                          "--workers", "1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "6 entries, 1 kept; missing 1, unreadable 3, zero-frame 0, too short (< 8 frames) 1" in run.stdout
    assert "frames:     min 4 / p5 4.4 / median 8" in run.stdout
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True).stdout
    assert "example:" in help_text


def test_mini_script_help():
    out = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "mini_kinetics.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "--train-ids" in out
