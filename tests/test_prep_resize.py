"""Resizing: sizes, fps, trimming, bad inputs, resume after an interruption, idempotence; the
keyframe interval (--gop) and the B-frame layout (--bframes) on both encode paths, recorded in
each output; the bundled ffmpeg CLI."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import av
from av.video.frame import PictureType
import imageio_ffmpeg
import numpy as np
import pytest

from prep_helpers import broken_files, frame_levels, ramp_video, stream_info
from video_gc.prep.probe import probe_video
from video_gc.prep.resize import (DEFAULT_BFRAMES, DEFAULT_GOP, DEFAULT_TUNE, ResizeJob, ffmpeg_exe, output_size,
                                  recorded_settings, resize_one, resize_videos)
from video_gc.utils.video_io import VideoWriter, write_video

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


# "ffmpeg": the system's CLI, else the binary of the imageio-ffmpeg package (a requirement), so never skipped.
BACKENDS = ["pyav", "ffmpeg"]


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
    assert "example:" in out and "--short-side" in out and "--gop" in out
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


def keyframe_positions(path):
    """Frame numbers (presentation order) of the keyframes, from the packets' flags; and the frame count."""
    with av.open(str(path)) as container:
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(video=0) if p.pts is not None)
    return [i for i, (_, key) in enumerate(packets) if key], len(packets)


def max_keyframe_gap(path):
    """Most frames from one keyframe to the next (or to the end)."""
    keys, frames = keyframe_positions(path)
    assert keys[0] == 0
    return max(b - a for a, b in zip(keys, keys[1:] + [frames]))


def x264_options(path):
    """The encoder settings x264 writes into the stream (its SEI message in the first packet): {name: value}."""
    with av.open(str(path)) as container:
        data = bytes(next(p for p in container.demux(video=0) if p.size))
    text = data[data.index(b"options: ") + 9:].split(b"\x00")[0].split(b"\x80")[0].decode("ascii")
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def script_main(name):
    """``main`` of a data_prep script, run in this process (no interpreter start-up per call)."""
    spec = importlib.util.spec_from_file_location(f"data_prep_{name}", os.path.join(REPO, "data_prep", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_ffmpeg_cli_found_without_a_system_ffmpeg():
    exe = ffmpeg_exe()
    assert exe == (shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe())
    assert os.access(exe, os.X_OK)
    version = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True).stdout
    assert "libx264" in version


@pytest.mark.parametrize("backend", BACKENDS + ["auto"])
def test_gop_caps_the_keyframe_interval_and_is_recorded(tmp_path, backend):
    src = ramp_video(tmp_path / "in.mp4", num_frames=40)
    assert max_keyframe_gap(src) > 6  # x264 alone: one keyframe for these 40 frames
    out = tmp_path / "out.mp4"
    result = resize_one(ResizeJob(src, str(out), 32, backend=backend, gop=6))
    assert result.status == "written" and result.frames == 40
    keys, frames = keyframe_positions(out)
    assert frames == 40 and max_keyframe_gap(out) <= 6 and len(keys) >= 7
    # "auto" takes the ffmpeg CLI: imageio-ffmpeg's binary where the system has none
    used = "pyav" if backend == "pyav" else "ffmpeg"
    assert recorded_settings(str(out)) == {"short_side": 32, "crf": 18, "gop": 6, "tune": "fastdecode",
                                           "bframes": 3, "backend": used}
    assert ResizeJob(src, str(out)).gop == DEFAULT_GOP
    with pytest.raises(ValueError, match="gop must be a whole number of frames >= 1, got 0"):
        ResizeJob(src, str(out), gop=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tune_fastdecode_by_default_is_recorded_and_in_the_stream(tmp_path, backend):
    src = ramp_video(tmp_path / "in.mp4", num_frames=12)
    assert DEFAULT_TUNE == "fastdecode"
    assert resize_one(ResizeJob(src, str(tmp_path / "fast.mp4"), 32, backend=backend)).status == "written"
    assert recorded_settings(str(tmp_path / "fast.mp4"))["tune"] == "fastdecode"
    # what the encoder did: fastdecode = no CABAC, no deblocking filter, no weighted P prediction
    options = x264_options(tmp_path / "fast.mp4")
    assert (options["cabac"], options["deblock"].split(":")[0], options["weightp"]) == ("0", "0", "0")
    assert resize_one(ResizeJob(src, str(tmp_path / "plain.mp4"), 32, backend=backend, tune="none")).status == "written"
    assert recorded_settings(str(tmp_path / "plain.mp4"))["tune"] == "none"
    options = x264_options(tmp_path / "plain.mp4")
    assert (options["cabac"], options["deblock"].split(":")[0]) == ("1", "1")
    assert frame_levels(tmp_path / "fast.mp4") == pytest.approx(frame_levels(src), abs=2)
    with pytest.raises(ValueError, match="tune must be one of none, fastdecode, .*, got 'fast'"):
        ResizeJob(src, str(tmp_path / "x.mp4"), tune="fast")
    # the folder resizer passes both on
    resize_videos([src], str(tmp_path / "folder"), short_side=32, backend=backend, tune="none", crf=23, verbose=False)
    assert recorded_settings(str(tmp_path / "folder" / "in.mp4")) == {"short_side": 32, "crf": 23, "gop": DEFAULT_GOP,
                                                                      "tune": "none", "bframes": DEFAULT_BFRAMES,
                                                                      "backend": backend}
    assert x264_options(tmp_path / "folder" / "in.mp4")["crf"].startswith("23.0")


def remux_with_comment(src, dst, comment):
    """``src``'s video stream copied into ``dst`` with the mp4 ``comment`` tag set to ``comment``."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        out.metadata["comment"] = comment
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def picture_types(path, skip_frame="DEFAULT"):
    """The picture type ("I", "P", "B") of every frame decoded with the decoder's ``skip_frame``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = skip_frame
        return [PictureType(frame.pict_type).name for frame in container.decode(stream)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bframes_are_never_references_so_a_reader_can_skip_each(tmp_path, backend):
    # texture panning across the frame: content on which B-frames pay (x264 may still make a B-frame a
    # P-frame where they do not, e.g. on flat frames fading)
    texture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = write_video(str(tmp_path / "in.mp4"), np.stack([np.roll(texture, 2 * i, axis=1) for i in range(40)]),
                      fps=10.0)
    out = tmp_path / "out.mp4"
    assert resize_one(ResizeJob(src, str(out), 32, backend=backend, gop=16)).status == "written"
    assert DEFAULT_BFRAMES == 3 and recorded_settings(str(out))["bframes"] == 3
    options = x264_options(out)
    assert (options["bframes"], options["b_pyramid"], options["b_adapt"]) == ("3", "0", "0")
    types = picture_types(out)
    # always 3 B-frames between reference frames, except where a keyframe or the end cuts a run short
    assert len(types) == 40 and types.count("B") >= 24
    assert "BBBB" not in "".join(types)
    # no frame refers to a B-frame: a decoder told to skip non-reference frames drops every one of them
    # and still decodes every I and P frame
    assert picture_types(out, "NONREF") == [t for t in types if t != "B"]

    # x264's own layout, recorded as such: adaptive B-frames with a B-pyramid (some B-frames are references)
    own = tmp_path / "own.mp4"
    assert resize_one(ResizeJob(src, str(own), 32, backend=backend, gop=16, bframes=None)).status == "written"
    assert recorded_settings(str(own))["bframes"] == "x264"
    options = x264_options(own)
    assert (options["b_pyramid"], options["b_adapt"]) == ("2", "1")
    for bad in (17, -1, True, "3"):
        with pytest.raises(ValueError, match="bframes must be a whole number from 0 to 16 or x264, got"):
            ResizeJob(src, str(out), bframes=bad)


def test_pyav_path_chooses_frame_types_afresh(tmp_path):
    # an all-intra source: were the decoded frames' types passed on, x264 would make every frame a keyframe
    texture = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = tmp_path / "intra.mp4"
    with VideoWriter(str(src), 64, 48, fps=10.0, gop=1) as writer:
        for i in range(24):
            writer.write(np.roll(texture, 2 * i, axis=1))
    assert set(picture_types(src)) == {"I"}
    out = tmp_path / "out.mp4"
    assert resize_one(ResizeJob(str(src), str(out), 32, backend="pyav", gop=16)).status == "written"
    types = picture_types(out)
    assert types.count("I") <= 3 and types.count("B") >= 12


def test_deterministic_writer_keeps_both_x264_settings(tmp_path):
    texture = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with VideoWriter(str(tmp_path / "v.mp4"), 64, 48, deterministic=True, bframes=2) as writer:
        for i in range(8):
            writer.write(np.roll(texture, i, axis=1))
    options = x264_options(tmp_path / "v.mp4")
    assert (options["mbtree"], options["bframes"], options["b_pyramid"], options["b_adapt"]) == ("0", "2", "0", "0")


def test_rerun_with_another_gop_or_bframes_keeps_the_outputs_and_says_so(tmp_path, capsys):
    src = tmp_path / "in"
    ramp_video(src / "a.mp4", num_frames=20)
    ramp_video(src / "b.mp4", num_frames=20, base=50)
    out = tmp_path / "out"
    summary = resize_videos(str(src), str(out), short_side=32, gop=5, backend="pyav")
    assert (summary["written"], summary["gop"], summary["other_settings"]) == (2, 5, 0)
    assert "resize to short side 32, gop 5 in" in capsys.readouterr().out
    write_video(str(out / "a.mp4"), np.zeros((20, 32, 42, 3), np.uint8))  # as an earlier version wrote it: no tag
    mtimes = {name: os.path.getmtime(out / name) for name in ("a.mp4", "b.mp4")}
    again = resize_videos(str(src), str(out), short_side=32, gop=10, backend="pyav")
    assert (again["written"], again["skipped"], again["other_settings"]) == (0, 2, 2)
    assert ("nothing to do: 2 of 2 outputs already exist and decode; 0 missing, 0 failed; 2 of the existing "
            "outputs were written with another --gop or --bframes (kept as they are: delete them to re-encode)"
            in capsys.readouterr().out)
    assert {name: os.path.getmtime(out / name) for name in mtimes} == mtimes
    assert recorded_settings(str(out / "a.mp4")) == {} and recorded_settings(str(out / "b.mp4"))["gop"] == 5
    reasons = sorted(resize_one(ResizeJob(str(src / n), str(out / n), 32, gop=10)).reason for n in ("a.mp4", "b.mp4"))
    assert reasons == ["kept the existing output (gop 5, not 10)", "kept the existing output (no recorded settings)"]
    # the same gop with another B-frame layout is flagged too, and so is an output from before --bframes
    assert resize_one(ResizeJob(str(src / "b.mp4"), str(out / "b.mp4"), 32, gop=5)).reason == ""
    assert resize_one(ResizeJob(str(src / "b.mp4"), str(out / "b.mp4"), 32, gop=10, bframes=None)).reason == (
        "kept the existing output (gop 5, not 10; bframes 3, not x264)")
    with av.open(str(out / "b.mp4")) as container:
        tag = container.metadata["comment"]
    remux_with_comment(out / "b.mp4", out / "old.mp4", tag.replace(" bframes=3", ""))
    old = resize_one(ResizeJob(str(src / "b.mp4"), str(out / "old.mp4"), 32, gop=5))
    assert (old.status, old.other_settings, old.reason) == ("skipped", True,
                                                            "kept the existing output (bframes x264, not 3)")


def test_scripts_pass_gop_tune_crf_and_bframes_to_every_resize(tmp_path, capsys):
    ramp_video(tmp_path / "raw" / "aaaaaaaaa01_000000_000010.mp4", num_frames=20)
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                        "abseiling,aaaaaaaaa01,0,10,train\n")
    kinetics = tmp_path / "kinetics"
    assert script_main("kinetics")(["--annotations", str(tmp_path / "train.csv"), "--videos", str(tmp_path / "raw"),
                                    "--output", str(kinetics), "--short-side", "32", "--workers", "1",
                                    "--gop", "3", "--tune", "none", "--crf", "30", "--bframes", "x264"]) == 0
    assert "videos (gop 3): 1 written" in capsys.readouterr().out
    written = kinetics / "videos" / "abseiling" / "aaaaaaaaa01_000000_000010.mp4"
    recorded = recorded_settings(str(written))
    assert (recorded["gop"], recorded["tune"], recorded["crf"], recorded["bframes"]) == (3, "none", 30, "x264")
    assert max_keyframe_gap(written) <= 3

    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    ramp_video(root / "Archery" / "v_Archery_g01_c01.avi", num_frames=20)
    ramp_video(root / "Archery" / "v_Archery_g02_c01.avi", num_frames=20)
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g02_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    ucf = tmp_path / "ucf"
    assert script_main("ucf101")(["--root", str(root), "--splits", str(lists), "--output", str(ucf),
                                  "--short-side", "32", "--workers", "1", "--gop", "4", "--bframes", "5"]) == 0
    for name in ("v_Archery_g01_c01.mp4", "v_Archery_g02_c01.mp4"):
        recorded = recorded_settings(str(ucf / "videos" / "Archery" / name))
        assert (recorded["gop"], recorded["tune"], recorded["crf"], recorded["bframes"]) == (4, "fastdecode", 18, 5)

    plain = tmp_path / "plain"
    assert script_main("resize_videos")(["--input", str(root), "--output", str(plain), "--short-side", "32",
                                         "--workers", "1", "--gop", "7", "--tune", "film", "--crf", "23"]) == 0
    recorded = recorded_settings(str(plain / "Archery" / "v_Archery_g01_c01.mp4"))
    assert (recorded["gop"], recorded["tune"], recorded["crf"]) == (7, "film", 23)
    assert script_main("resize_videos")(["--input", str(root), "--output", str(plain), "--short-side", "32",
                                         "--workers", "1"]) == 0
    assert "2 of the existing outputs were written with another --gop" in capsys.readouterr().out
    for option, bad, why in (("--gop", "0", "0 is not >= 1"), ("--gop", "x", "'x' is not a whole number"),
                             ("--bframes", "17", "'17' is not a whole number from 0 to 16 or x264")):
        with pytest.raises(SystemExit) as stop:
            script_main("resize_videos")(["--input", str(root), "--output", str(plain), option, bad])
        assert stop.value.code == 2 and f"argument {option}: {why}" in capsys.readouterr().err
