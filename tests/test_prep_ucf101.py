"""UCF-101 preparation on a tiny tree in the official layout (UCF-101/<Class>/*.avi + ucfTrainTestlist)."""

import json
import os
import subprocess
import sys

import pytest

from prep_helpers import broken_files, frame_levels, ramp_video
from video_gc.data.lists import read_list
from video_gc.prep.lists import PrepError
from video_gc.prep.ucf101 import prepare_ucf101

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]


def v(cls, g, c):
    return f"{cls}/v_{cls if cls != 'HandstandPushups' else 'HandStandPushups'}_g{g:02d}_c{c:02d}.avi"


@pytest.fixture
def ucf_raw(tmp_path):
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    videos = [v(cls, g, 1) for cls in CLASSES for g in (1, 2, 3)]
    for i, rel in enumerate(videos):
        ramp_video(root / rel, base=10 * i)
    bad = broken_files(str(tmp_path / "bad"))
    os.replace(bad["trunc"], root / v("Archery", 4, 1))  # listed in split 1's train list
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    # split k: group k is the test group
    for k in (1, 2, 3):
        train = [f"{v(c, g, 1)} {i + 1}" for i, c in enumerate(CLASSES) for g in (1, 2, 3) if g != k]
        if k == 1:
            train += [f"{v('Archery', 4, 1)} 2", f"{v('Archery', 5, 1)} 2"]  # truncated, missing
        (lists / f"trainlist0{k}.txt").write_text("\r\n".join(train) + "\r\n")  # the official files use CRLF
        (lists / f"testlist0{k}.txt").write_text("".join(f"{v(c, k, 1)}\n" for c in CLASSES))
    return str(root), str(lists)


def test_prepare_exact_lists(ucf_raw, tmp_path, capsys):
    root, lists = ucf_raw
    out = str(tmp_path / "ucf")
    summary = prepare_ucf101(root, lists, out, short_side=32)
    assert json.load(open(os.path.join(out, "classids.json"))) == {c: i for i, c in enumerate(CLASSES)}
    for k in (1, 2, 3):
        train = read_list(os.path.join(out, f"split{k}", "train.csv"))
        expected = [(f"../videos/{v(c, g, 1)[:-4]}.mp4", i) for i, c in enumerate(CLASSES) for g in (1, 2, 3) if g != k]
        assert train == expected
        test = [(f"../videos/{v(c, k, 1)[:-4]}.mp4", i) for i, c in enumerate(CLASSES)]
        assert read_list(os.path.join(out, f"split{k}", "test.csv")) == test
        assert read_list(os.path.join(out, f"split{k}", "val.csv")) == test
    assert summary["splits"]["1/train"] == {"annotated": 8, "listed": 6, "missing": 1, "failed": 1}
    assert summary["videos"] == {"written": 9, "skipped": 0, "missing": 1, "failed": 1, "other_settings": 0}
    report = open(os.path.join(out, "report.csv")).read()
    assert "v_Archery_g04_c01.mp4" in report and "v_Archery_g05_c01.mp4,,missing" not in report
    assert ",missing,source file not found" in report
    src = os.path.join(root, v("Archery", 2, 1))
    assert frame_levels(os.path.join(out, "videos", v("Archery", 2, 1)[:-4] + ".mp4")) == \
        pytest.approx(frame_levels(src), abs=2)

    # the data pipeline resolves ../videos/... against the split folder
    from video_gc.config import get_cfg
    from video_gc.data import build_dataset

    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = os.path.join(out, "split2"), 3
    ds = build_dataset(cfg, "test")
    assert list(ds.labels) == [0, 1, 2]
    assert [os.path.realpath(p) for p in ds.paths] == \
        [os.path.realpath(os.path.join(out, "videos", v(c, 2, 1)[:-4] + ".mp4")) for c in CLASSES]
    assert all(os.path.isfile(p) for p in ds.paths)

    capsys.readouterr()
    again = prepare_ucf101(root, lists, out, short_side=32)
    assert again["videos"]["written"] == 0 and again["videos"]["skipped"] == 9
    assert "nothing to do" in capsys.readouterr().out


def test_bad_split_files_name_file_and_line(ucf_raw, tmp_path):
    root, lists = ucf_raw
    test2 = os.path.join(lists, "testlist02.txt")
    good = open(test2).read()
    with open(test2, "a") as f:
        f.write("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(PrepError, match=r"testlist02\.txt:4: class folder 'Bowling'.*not in classInd"):
        prepare_ucf101(root, lists, str(tmp_path / "o"))
    with open(test2, "w") as f:
        f.write(good)
    with open(os.path.join(lists, "trainlist03.txt"), "w") as f:
        f.write(f"{v('Archery', 1, 1)} 3\n")
    with pytest.raises(PrepError, match=r"trainlist03\.txt:1: label 3 does not match class 'Archery'"):
        prepare_ucf101(root, lists, str(tmp_path / "o"))
    with open(os.path.join(lists, "classInd.txt"), "w") as f:
        f.write("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(PrepError, match=r"classInd\.txt:2: index 3 out of order"):
        prepare_ucf101(root, lists, str(tmp_path / "o"))


def test_script_empty_folder_and_help(ucf_raw, tmp_path):
    _, lists = ucf_raw
    script = os.path.join(REPO, "data_prep", "ucf101.py")
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "split1" in out
    (tmp_path / "empty").mkdir()
    run = subprocess.run([sys.executable, script, "--root", str(tmp_path / "empty"), "--splits", lists,
                          "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 1 and "no video files" in run.stderr and "Traceback" not in run.stderr
