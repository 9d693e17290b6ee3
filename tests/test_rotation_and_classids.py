"""Rotated videos (phone videos' display matrix) read upright by both decoders, the dataset, the
probe and the resizer; UCF-101 class names found from a split folder."""

import json
import os
import struct

import av
import numpy as np
import pytest
import torch

from prep_helpers import ramp_video
from video_gc.config import get_cfg
from video_gc.data import build_dataset, open_video
from video_gc.data.lists import write_list
from video_gc.engine.common import class_names
from video_gc.prep.check import probe_decord
from video_gc.prep.probe import probe_video
from video_gc.prep.resize import resize_videos
from video_gc.prep.ucf101 import prepare_ucf101
from video_gc.utils.video_io import write_video

BACKENDS = ("decord", "pyav")
ROTATIONS = (90, 180, 270)
# Both sides at least 96: decord 0.6 returns misshapen frames for some narrow ones (48 or 72 wide), rotated or not.
NUM_FRAMES, HEIGHT, WIDTH = 8, 96, 128
# tkhd matrix entries (a, b, c, d) in 16.16 fixed point for a clockwise display rotation, as phones write them.
TKHD_ROTATION = {90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}


def upright_frames():
    """What a player shows: a bright square in the top-left corner on a grey that brightens frame by frame."""
    frames = np.empty((NUM_FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    frames[:] = (30 + 12 * np.arange(NUM_FRAMES))[:, None, None, None]
    frames[:, :24, :32] = 235
    return frames


def stored_frames(clockwise):
    """The frames as stored in a file that a player turns ``clockwise`` degrees to show upright_frames()."""
    return np.ascontiguousarray(np.rot90(upright_frames(), k=clockwise // 90, axes=(1, 2)))


def _boxes(data, start, end):
    """(kind, payload start, end) of each mp4 box in data[start:end] (32-bit sizes: small files)."""
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start + 8, start + size
        start += size


def rotated_mp4(path, clockwise):
    """An H.264 mp4 whose track header carries the display matrix of a ``clockwise`` rotation.

    PyAV 16 has no way to attach a display matrix to a stream it writes, and the mp4 muxer of
    its FFmpeg drops a ``rotate`` tag, so the matrix is written into the ``tkhd`` box afterwards,
    where phones keep it. Both decoders see it (checked with decord 0.6.0 and PyAV 16.0.1).
    """
    write_video(str(path), stored_frames(clockwise), fps=10.0)
    data = bytearray(open(path, "rb").read())
    moov = next((begin, end) for kind, begin, end in _boxes(data, 0, len(data)) if kind == b"moov")
    trak = next((begin, end) for kind, begin, end in _boxes(data, *moov) if kind == b"trak")
    tkhd = next(begin for kind, begin, _ in _boxes(data, *trak) if kind == b"tkhd")
    # version/flags, then times, track id and duration (64-bit times in version 1), then 16 bytes to the matrix
    matrix = tkhd + 4 + (32 if data[tkhd] == 1 else 20) + 16
    assert struct.unpack(">9i", data[matrix:matrix + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    a, b, c, d = TKHD_ROTATION[clockwise]
    data[matrix:matrix + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    open(path, "wb").write(bytes(data))
    return str(path)


def tagged_mkv(path, clockwise):
    """An mkv whose stream has only a legacy ``rotate`` tag (what remuxing with an old ffmpeg left)."""
    frames = stored_frames(clockwise)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.metadata["rotate"] = str(clockwise)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


def read(path, backend, indices):
    decoder = open_video(path, backend)
    try:
        assert decoder.num_frames == NUM_FRAMES
        return decoder.get_frames(indices).numpy().astype(int)
    finally:
        decoder.close()


def assert_upright(frames, expected):
    assert frames.shape == expected.shape
    assert np.abs(frames - expected.astype(int)).mean() < 3


def stored_rotation(path):
    """(display-matrix rotation PyAV sees on the first frame, the stream's tags)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return next(container.decode(stream)).rotation, dict(stream.metadata)


@pytest.mark.parametrize("clockwise", ROTATIONS)
def test_display_matrix_upright_and_equal_in_both_decoders(tmp_path, clockwise):
    path = rotated_mp4(tmp_path / f"r{clockwise}.mp4", clockwise)
    assert -stored_rotation(path)[0] % 360 == clockwise  # PyAV reports it counter-clockwise, as stored
    expected = upright_frames()
    frames = {}
    for backend in BACKENDS:
        # [0, 5, 7] decodes from the start, [6] after a seek
        frames[backend] = np.concatenate([read(path, backend, [0, 5, 7]), read(path, backend, [6])])
        assert_upright(frames[backend], expected[[0, 5, 7, 6]])
    assert np.abs(frames["decord"] - frames["pyav"]).max() <= 2


def test_legacy_rotate_tag_applied_by_both_decoders(tmp_path):
    path = tagged_mkv(tmp_path / "tag90.mkv", 90)
    rotation, tags = stored_rotation(path)
    assert rotation == 0 and tags["ROTATE"] == "90"  # no display matrix: only the tag says it
    frames = {backend: read(path, backend, [1, 4]) for backend in BACKENDS}
    for backend in BACKENDS:
        assert_upright(frames[backend], upright_frames()[[1, 4]])
    assert np.abs(frames["decord"] - frames["pyav"]).max() <= 2


def test_probe_reports_the_upright_size(tmp_path):
    path = rotated_mp4(tmp_path / "r90.mp4", 90)
    for info in (probe_video(path), probe_decord(path)):
        assert info.ok and (info.width, info.height, info.frames) == (WIDTH, HEIGHT, NUM_FRAMES)


def eval_cfg(data_dir, backend):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(data_dir)
    cfg.DATA.DECODING_BACKEND = backend
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 4, 2
    cfg.DATA.TEST_CROP_SIZE = 48
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 2, 3
    cfg.MODEL.NUM_CLASSES = 1
    return cfg


def test_dataset_items_equal_for_both_backends_and_match_an_unrotated_copy(tmp_path):
    upright_copy = write_video(str(tmp_path / "upright.mp4"), upright_frames(), fps=10.0)
    videos = [upright_copy] + [rotated_mp4(tmp_path / f"r{c}.mp4", c) for c in ROTATIONS] + \
        [tagged_mkv(tmp_path / "tag270.mkv", 270)]
    write_list(str(tmp_path / "test.csv"), [(os.path.basename(p), 0) for p in videos])
    items = {backend: [item["inputs"] for item in build_dataset(eval_cfg(tmp_path, backend), "test")]
             for backend in BACKENDS}
    for decord_views, pyav_views in zip(items["decord"], items["pyav"]):
        assert decord_views.shape == (6, 3, 4, 48, 48)
        assert torch.allclose(decord_views, pyav_views, atol=0.05)
        # the same views as the video stored upright, up to the noise of another encode
        assert (pyav_views - items["pyav"][0]).abs().mean() < 0.05


@pytest.mark.parametrize("backend", ["pyav", "auto", "ffmpeg"])  # ffmpeg: on the PATH or imageio-ffmpeg's
def test_resize_writes_upright_frames_without_rotation(tmp_path, backend):
    src = tmp_path / "src"
    src.mkdir()
    for clockwise in ROTATIONS:
        rotated_mp4(src / f"r{clockwise}.mp4", clockwise)
    if backend != "ffmpeg":  # whether the ffmpeg CLI reads a legacy rotate tag depends on its version
        tagged_mkv(src / "tag90.mkv", 90)
    out = tmp_path / "out"
    summary = resize_videos(str(src), str(out), short_side=32, backend=backend, verbose=False)
    assert summary["written"] == len(os.listdir(src))
    # the short side is the upright frame's height: 128x96 -> 42x32
    levels = 30 + 12 * np.arange(NUM_FRAMES)
    for name in sorted(os.listdir(out)):
        if not name.endswith(".mp4"):
            continue
        path = str(out / name)
        rotation, tags = stored_rotation(path)
        assert rotation == 0 and not any(key.lower() == "rotate" for key in tags), name
        info = probe_video(path)
        assert (info.width, info.height, info.frames) == (42, 32, NUM_FRAMES), name
        frames = {b: read(path, b, list(range(NUM_FRAMES))) for b in BACKENDS}
        assert np.abs(frames["decord"] - frames["pyav"]).max() <= 2, name
        # upright: the bright square is in the top-left corner (8x10 pixels after the resize)
        corner = frames["pyav"][:, :6, :8].mean()
        assert corner > 200 and frames["pyav"][:, -6:, -8:].mean() < 150, name
        # and frame i keeps its grey level (two encodes: a few levels off; the step is 12)
        assert np.abs(frames["pyav"][:, 12:, 14:].mean(axis=(1, 2, 3)) - levels).max() < 6, name


def test_ucf101_class_names_resolve_from_a_split_folder(tmp_path, caplog):
    classes = ["ApplyEyeMakeup", "Archery"]
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    for cls in classes:
        for g in (1, 2):
            ramp_video(root / cls / f"v_{cls}_g{g:02d}_c01.avi", num_frames=4)
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (lists / "trainlist01.txt").write_text("".join(f"{c}/v_{c}_g02_c01.avi {i + 1}\n" for i, c in enumerate(classes)))
    (lists / "testlist01.txt").write_text("".join(f"{c}/v_{c}_g01_c01.avi\n" for c in classes))
    out = tmp_path / "ucf101"
    prepare_ucf101(str(root), str(lists), str(out), short_side=32, verbose=False)

    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = str(out / "split1"), len(classes)
    with caplog.at_level("WARNING"):
        assert class_names(cfg) == classes
    assert "class names unavailable" not in caplog.text

    # DATA.CLASS_NAMES_FILE still chooses the file (an absolute path replaces the data folder)
    other = tmp_path / "names.json"
    other.write_text(json.dumps({"makeup": 0, "bow": 1}))
    cfg.DATA.CLASS_NAMES_FILE = str(other)
    assert class_names(cfg) == ["makeup", "bow"]
