"""Kinetics-400 preparation on tiny fixtures in the official CSV format."""

import json
import os
import re
import subprocess
import sys

import pytest

from prep_helpers import broken_files, frame_levels, ramp_video
from video_gc.data.lists import read_list
from video_gc.prep.kinetics import prepare_kinetics, read_annotations
from video_gc.prep.lists import PrepError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Awkward labels: parentheses, an apostrophe, a comma and quotes inside a quoted field.
TRAIN_CSV = '''label,youtube_id,time_start,time_end,split,is_cc
abseiling,aaaaaaaaa01,10,20,train,0
"passing American football (in game)",bbbbbbbbb02,0,10,train,0
"massaging person's head",ccccccccc03,1,2,train,1
"tying ""knot"", fancy",ddddddddd04,5,15,train,0
abseiling,eeeeeeeee05,0,10,train,0
"passing American football (in game)",fffffffff06,0,10,train,0
abseiling,ggggggggg07,0,10,train,0
abseiling,hhhhhhhhh08,0,10,train,0
'''
VAL_CSV = '''label,youtube_id,time_start,time_end,split
"tying ""knot"", fancy",iiiiiiiii09,3,13,val
"massaging person's head",jjjjjjjjj10,0,10,val
'''
TEST_CSV = '''youtube_id,time_start,time_end,split
kkkkkkkkk11,0,10,test
lllllllll12,0,10,test
'''
LABELS = ["abseiling", "massaging person's head", "passing American football (in game)", 'tying "knot", fancy']
FOLDERS = ["abseiling", "massaging_person_s_head", "passing_American_football_in_game", "tying_knot_fancy"]


@pytest.fixture
def kinetics_raw(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "train.csv").write_text(TRAIN_CSV)
    (ann / "validate.csv").write_text(VAL_CSV)
    (ann / "test.csv").write_text(TEST_CSV)
    raw = tmp_path / "raw"
    ramp_video(raw / "abseiling" / "aaaaaaaaa01_000010_000020.mp4")  # trimmed, in a class folder
    ramp_video(raw / "bbbbbbbbb02_000000_000010.mkv", base=30)  # trimmed, another container
    ramp_video(raw / "ccccccccc03.mp4", num_frames=30, fps=10.0)  # untrimmed download: cut 1 s .. 2 s
    ramp_video(raw / "ddddddddd04_000005_000015.mp4", base=50)
    # eeeeeeeee05 never downloaded
    bad = broken_files(str(tmp_path / "bad"))
    os.replace(bad["zero"], raw / "fffffffff06_000000_000010.mp4")
    os.replace(bad["text"], raw / "ggggggggg07_000000_000010.mp4")
    os.replace(bad["trunc"], raw / "hhhhhhhhh08_000000_000010.mp4")
    ramp_video(raw / "iiiiiiiii09_000003_000013.mp4", base=70)
    ramp_video(raw / "jjjjjjjjj10.webm.mp4", base=90)  # a stray name that matches nothing
    ramp_video(raw / "jjjjjjjjj10_000000_000010.mp4", base=90)
    ramp_video(raw / "kkkkkkkkk11_000000_000010.mp4")
    return [str(ann / "train.csv"), str(ann / "validate.csv"), str(ann / "test.csv")], str(raw)



def test_prepare_exact_outputs(kinetics_raw, tmp_path, capsys):
    annotations, raw = kinetics_raw
    out = str(tmp_path / "k400")
    summary = prepare_kinetics(annotations, raw, out, short_side=32)
    assert json.load(open(os.path.join(out, "classids.json"))) == {label: i for i, label in enumerate(LABELS)}
    assert read_list(os.path.join(out, "train.csv")) == [
        (f"videos/{FOLDERS[0]}/aaaaaaaaa01_000010_000020.mp4", 0),
        (f"videos/{FOLDERS[2]}/bbbbbbbbb02_000000_000010.mp4", 2),
        (f"videos/{FOLDERS[1]}/ccccccccc03_000001_000002.mp4", 1),
        (f"videos/{FOLDERS[3]}/ddddddddd04_000005_000015.mp4", 3),
    ]
    assert read_list(os.path.join(out, "val.csv")) == [
        (f"videos/{FOLDERS[3]}/iiiiiiiii09_000003_000013.mp4", 3),
        (f"videos/{FOLDERS[1]}/jjjjjjjjj10_000000_000010.mp4", 1),
    ]
    assert not os.path.exists(os.path.join(out, "test.csv"))  # the test annotations carry no labels
    assert open(os.path.join(out, "test_unlabeled.txt")).read() == "videos/_unlabeled/kkkkkkkkk11_000000_000010.mp4\n"
    # the untrimmed download was cut to [1 s, 2 s) = frames 10..19
    assert frame_levels(os.path.join(out, "videos", FOLDERS[1], "ccccccccc03_000001_000002.mp4")) == \
        pytest.approx([100 + 10 * i for i in range(10)], abs=2)
    assert summary["splits"] == {"train": {"annotated": 8, "listed": 4, "missing": 1, "failed": 3},
                                 "val": {"annotated": 2, "listed": 2, "missing": 0, "failed": 0},
                                 "test": {"annotated": 2, "listed": 1, "missing": 1, "failed": 0}}
    report = {row.split(",")[1]: row for row in open(os.path.join(out, "report.csv")).read().splitlines()[1:]}
    assert sorted(report) == sorted([f"videos/{FOLDERS[0]}/eeeeeeeee05_000000_000010.mp4",
                                     f"videos/{FOLDERS[2]}/fffffffff06_000000_000010.mp4",
                                     f"videos/{FOLDERS[0]}/ggggggggg07_000000_000010.mp4",
                                     f"videos/{FOLDERS[0]}/hhhhhhhhh08_000000_000010.mp4",
                                     "videos/_unlabeled/lllllllll12_000000_000010.mp4"])
    assert ",missing," in report[f"videos/{FOLDERS[0]}/eeeeeeeee05_000000_000010.mp4"]
    assert "empty file (0 bytes)" in report[f"videos/{FOLDERS[2]}/fffffffff06_000000_000010.mp4"]
    printed = capsys.readouterr().out
    assert re.search(r"train\s+8\s+4\s+1\s+3\n", printed) and "left-out videos and reasons" in printed

    # the data pipeline resolves the lists against the folder and finds every video
    from video_gc.config import get_cfg
    from video_gc.data import build_dataset

    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = out, 4
    ds = build_dataset(cfg, "train")
    assert list(ds.labels) == [0, 2, 1, 3] and all(os.path.isfile(p) for p in ds.paths)

    # second run: nothing new to write, identical lists
    before = open(os.path.join(out, "train.csv")).read()
    again = prepare_kinetics(annotations, raw, out, short_side=32)
    assert again["videos"]["written"] == 0 and again["videos"]["skipped"] == 7
    assert "nothing to do" in capsys.readouterr().out
    assert open(os.path.join(out, "train.csv")).read() == before


def test_quoted_labels_and_bad_csvs(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(TRAIN_CSV)
    rows = read_annotations(str(path))
    assert [r.label for r in rows[:4]] == [LABELS[0], LABELS[2], LABELS[1], LABELS[3]]
    assert rows[2].start == 1.0 and rows[2].end == 2.0 and rows[2].split == "train"
    bad = tmp_path / "validate.csv"
    bad.write_text("label,youtube_id,time_end\nabseiling,x,3\n")
    with pytest.raises(PrepError, match=r"validate\.csv:1: missing column\(s\) time_start"):
        read_annotations(str(bad))
    bad.write_text("label,youtube_id,time_start,time_end\nabseiling,x,0,10\nabseiling,y,zero,10\n")
    with pytest.raises(PrepError, match=r"validate\.csv:3: column 'time_start' is 'zero'"):
        read_annotations(str(bad))
    nolabel = tmp_path / "train_nolabel.csv"
    nolabel.write_text("youtube_id,time_start,time_end,split\nx,0,10,train\n")
    with pytest.raises(PrepError, match="missing column 'label' for train"):
        read_annotations(str(nolabel))


def test_script_reports_errors_and_empty_folder(kinetics_raw, tmp_path):
    annotations, _ = kinetics_raw
    script = os.path.join(REPO, "data_prep", "kinetics.py")
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "--annotations" in out
    (tmp_path / "empty").mkdir()
    run = subprocess.run([sys.executable, script, "--annotations", *annotations, "--videos", str(tmp_path / "empty"),
                          "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 1 and "no video files" in run.stderr and str(tmp_path / "empty") in run.stderr
    assert "Traceback" not in run.stderr
