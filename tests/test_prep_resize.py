"""Resizing: sizes, fps, trimming, bad inputs, resume after an interruption, idempotence."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from prep_helpers import broken_files, frame_levels, ramp_video, stream_info
from video_gc.prep.probe import probe_video
from video_gc.prep.resize import ResizeJob, output_size, resize_one, resize_videos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "data_prep", "resize_videos.py")


def test_output_size_keeps_aspect_with_even_sides():
    assert output_size(1920, 1080, 256) == (456, 256)
    assert output_size(1080, 1920, 256) == (256, 456)
    assert output_size(340, 256, 320) == (424, 320)  # 425 is odd: an even neighbour
    assert output_size(64, 48, 32) == (42, 32)
    for w, h in ((641, 359), (100, 100), (321, 240)):
        ow, oh = output_size(w, h, 256)
        assert ow % 2 == 0 and oh % 2 == 0 and min(ow, oh) == 256
        assert abs(ow / oh - w / h) < 0.01


BACKENDS = ["pyav", pytest.param("ffmpeg", marks=pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                                                     reason="no ffmpeg CLI on this machine"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_keeps_fps_drops_audio_and_trims(tmp_path, backend):
    src = ramp_video(tmp_path / "in.mp4", num_frames=20, fps=10.0)
    whole = resize_one(ResizeJob(src, str(tmp_path / "out" / "whole.mp4"), 32, backend=backend))
    assert whole.status == "written" and whole.frames == 20
    info = stream_info(tmp_path / "out" / "whole.mp4")
    assert info == {"fps": 10.0, "width": 42, "height": 32, "codec": "h264", "audio": 0, "frames": 20}
    assert frame_levels(tmp_path / "out" / "whole.mp4") == pytest.approx(frame_levels(src), abs=2)
    # cut [0.5 s, 1.2 s) at 10 fps = source frames 5..11
    cut = resize_one(ResizeJob(src, str(tmp_path / "out" / "cut.mp4"), 32, start=0.5, end=1.2, backend=backend))
    assert cut.status == "written" and cut.frames == 7
    assert frame_levels(tmp_path / "out" / "cut.mp4") == pytest.approx(frame_levels(src)[5:12], abs=2)
    assert stream_info(tmp_path / "out" / "cut.mp4")["fps"] == 10.0
    empty = resize_one(ResizeJob(src, str(tmp_path / "out" / "late.mp4"), 32, start=5.0, end=6.0, backend=backend))
    assert empty.status == "failed" and "no frames decoded in [5, 6) s" in empty.reason
    assert not os.path.exists(tmp_path / "out" / "late.mp4")
    assert not [n for n in os.listdir(tmp_path / "out") if ".partial" in n]


def test_folder_with_bad_files_leftover_temp_and_second_run(tmp_path, capsys):
    src = tmp_path / "in"
    ramp_video(src / "a.mp4")
    ramp_video(src / "sub dir" / "b.avi", base=100)
    bad = broken_files(str(src))
    out = tmp_path / "out"
    os.makedirs(out)
    # what a killed run leaves: a half-written temp file next to the final name
    with open(out / "a.partial.mp4", "wb") as f:
        f.write(b"\x00" * 1000)
    summary = resize_videos(str(src), str(out), short_side=32)
    assert (summary["written"], summary["skipped"], summary["failed"], summary["missing"]) == (2, 0, 3, 0)
    assert frame_levels(out / "sub dir" / "b.mp4") == pytest.approx(frame_levels(src / "sub dir" / "b.avi"), abs=2)
    assert probe_video(str(out / "a.mp4")).frames == 12
    # the temp file was replaced; the bad files have no output
    assert sorted(os.listdir(out)) == ["a.mp4", "resize_report.csv", "sub dir"]
    report = open(out / "resize_report.csv").read().splitlines()
    assert report[0] == "split,item,source,status,reason" and len(report) == 4
    reasons = {line.split(",")[1]: line for line in report[1:]}
    assert "empty file (0 bytes)" in reasons["zero.mp4"]
    assert "Invalid data found" in reasons["text.mp4"] and bad["text"] in reasons["text.mp4"]
    assert "failed" in reasons["trunc.mp4"]
    capsys.readouterr()
    mtime = os.path.getmtime(out / "a.mp4")
    again = resize_videos(str(src), str(out), short_side=32)
    assert (again["written"], again["skipped"], again["failed"]) == (0, 2, 3)
    assert "nothing to do: 2 of 5 outputs already exist and decode" in capsys.readouterr().out
    assert os.path.getmtime(out / "a.mp4") == mtime


def test_killed_run_resumes(tmp_path):
    src = tmp_path / "in"
    for i in range(40):
        ramp_video(src / f"v{i:02d}.mp4", num_frames=20, base=i)
    out = tmp_path / "out"
    cmd = [sys.executable, SCRIPT, "--input", str(src), "--output", str(out), "--short-side", "32", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(n.endswith(".mp4") and ".partial" not in n
                                                              for n in os.listdir(out))):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [n for n in os.listdir(out) if n.endswith(".mp4") and ".partial" not in n]
    assert 1 <= len(done) < 40
    for name in done:  # whatever looks finished is finished
        assert probe_video(str(out / name)).frames == 20
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"{40 - len(done)} written, {len(done)} already there; 0 missing, 0 failed" in run.stdout
    assert sorted(os.listdir(out)) == sorted([f"v{i:02d}.mp4" for i in range(40)] + ["resize_report.csv"])


def test_script_help_and_file_list(tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "--short-side" in out
    a = ramp_video(tmp_path / "x" / "a.mp4")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{a}\n{tmp_path / 'x' / 'gone.mp4'}\n")
    run = subprocess.run([sys.executable, SCRIPT, "--input", str(listing), "--output", str(tmp_path / "o"),
                          "--short-side", "32", "--workers", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "1 written, 0 already there; 1 missing, 0 failed" in run.stdout
    assert stream_info(tmp_path / "o" / "a.mp4")["height"] == 32
    run = subprocess.run([sys.executable, SCRIPT, "--input", str(tmp_path / "nothing"), "--output",
                          str(tmp_path / "o2")], capture_output=True, text=True)
    assert run.returncode == 1 and "video folder not found" in run.stderr and "Traceback" not in run.stderr
