"""Temporal sampling, spatial crops and data-list parsing (video_gc.data)."""

import fractions

import numpy as np
import pytest
import torch

from video_gc.config import get_cfg
from video_gc.data import DataListError, build_dataset, open_video, read_video_list
from video_gc.data.sampling import clip_span, eval_clip_indices, train_clip_indices
from video_gc.data.synthetic_clips import read_frame_index, write_indexed_video
from video_gc.data.transforms import crop_offsets, eval_crops
from video_gc.utils.video_io import write_video


@pytest.mark.parametrize("fps, frames, expected_first, expected_last", [
    # 8 frames every 8 at 30 fps: a 64-frame window at 30 fps...
    (30.0, 300, [0, 9, 18, 27, 36, 45, 54, 63], [236, 245, 254, 263, 272, 281, 290, 299]),
    # ...128 source frames at 60 fps...
    (60.0, 300, [0, 18, 36, 54, 72, 90, 108, 127], [172, 190, 208, 226, 244, 262, 280, 299]),
    # ...and 51.2 at 24 fps (truncated to integers like PySlowFast).
    (24.0, 300, [0, 7, 14, 21, 28, 35, 43, 50], [248, 255, 263, 270, 277, 284, 291, 299]),
    # A video shorter than one clip: every clip is the same, the last frame repeats.
    (30.0, 20, [0, 9, 18, 19, 19, 19, 19, 19], [0, 9, 18, 19, 19, 19, 19, 19]),
])
def test_clip_indices_for_known_fps_and_lengths(fps, frames, expected_first, expected_last):
    clips = eval_clip_indices(frames, fps, num_frames=8, sampling_rate=8, target_fps=30, num_clips=10)
    assert clips.shape == (10, 8)
    assert clips[0].tolist() == expected_first
    assert clips[-1].tolist() == expected_last
    assert int(clips.min()) >= 0 and int(clips.max()) <= frames - 1


def test_test_views_cover_the_video_uniformly():
    frames, span = 500, clip_span(8, 8, 30.0, 30)
    clips = eval_clip_indices(frames, 30.0, num_frames=8, sampling_rate=8, target_fps=30, num_clips=10)
    starts = clips[:, 0].double()
    gaps = starts[1:] - starts[:-1]
    # Equal spacing (up to integer truncation), first clip at frame 0, last clip ends on the last frame.
    assert float(gaps.max() - gaps.min()) <= 1.0
    assert clips[0, 0] == 0 and clips[-1, -1] == frames - 1
    assert float(gaps.mean()) == pytest.approx((frames - span) / 9, abs=0.2)
    # A single clip is the centre clip.
    centre = eval_clip_indices(frames, 30.0, num_frames=8, sampling_rate=8, target_fps=30, num_clips=1)[0]
    assert abs((centre[0] + centre[-1]).item() / 2 - (frames - 1) / 2) <= 1


def test_train_clip_is_random_contiguous_window_in_range():
    starts = set()
    for seed in range(30):
        clip = train_clip_indices(300, 60.0, num_frames=8, sampling_rate=8, target_fps=30,
                                  generator=torch.Generator().manual_seed(seed))
        steps = clip[1:] - clip[:-1]
        assert clip.min() >= 0 and clip.max() <= 299
        assert steps.min() >= 18 and steps.max() <= 19  # 128/7 source frames apart at 60 fps
        starts.add(int(clip[0]))
    assert len(starts) > 20


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decoded_frames_are_the_sampled_ones(tmp_path, backend):
    path = write_indexed_video(str(tmp_path / "v.mp4"), 130, fps=60.0)
    decoder = open_video(path, backend)
    assert decoder.num_frames == 130 and decoder.fps == pytest.approx(60.0)
    clips = eval_clip_indices(decoder.num_frames, decoder.fps, num_frames=8, sampling_rate=8,
                              target_fps=30, num_clips=3)
    frames = decoder.get_frames(clips.reshape(-1))
    assert [read_frame_index(f) for f in frames] == clips.reshape(-1).tolist()


def test_crop_offsets_landscape_portrait_and_single():
    # Landscape: left / centre / right, vertically centred (ceil like PySlowFast).
    assert crop_offsets(256, 341, 256, 3) == [(0, 0), (0, 43), (0, 85)]
    assert crop_offsets(60, 100, 48, 3) == [(6, 0), (6, 26), (6, 52)]
    # Portrait: top / centre / bottom, horizontally centred.
    assert crop_offsets(100, 60, 48, 3) == [(0, 6), (26, 6), (52, 6)]
    # One crop is the centre.
    assert crop_offsets(60, 100, 48, 1) == [(6, 26)]
    with pytest.raises(ValueError, match="larger than the frame"):
        crop_offsets(40, 100, 48, 3)


def test_test_crops_cut_the_right_pixels():
    video = torch.arange(2 * 3 * 50 * 70).reshape(2, 3, 50, 70)
    crops = eval_crops(video, 50, 3)
    assert torch.equal(crops[0], video[..., :, 0:50])
    assert torch.equal(crops[1], video[..., :, 10:60])
    assert torch.equal(crops[2], video[..., :, 20:70])


def test_fused_normalize_matches_torchvision():
    from torchvision.transforms.v2 import functional as F

    from video_gc.data.transforms import normalize

    video = torch.randint(0, 256, (4, 3, 10, 12), dtype=torch.uint8)
    mean, std = [0.45, 0.4, 0.35], [0.225, 0.2, 0.25]
    expected = F.normalize(video.float() / 255, mean, std).permute(1, 0, 2, 3)
    assert torch.allclose(normalize(video, mean, std), expected, atol=1e-5)


def _gradient_dataset(tmp_path, height, width):
    """A real video whose grey level grows along its long side (0 -> 255)."""
    long_side = max(height, width)
    ramp = np.linspace(0, 255, long_side).round().astype(np.uint8)
    frame = np.empty((height, width, 3), np.uint8)
    if height > width:
        frame[:] = ramp[:, None, None]
    else:
        frame[:] = ramp[None, :, None]
    write_video(str(tmp_path / "g.mp4"), np.repeat(frame[None], 16, axis=0), fps=30.0)
    (tmp_path / "test.csv").write_text("g.mp4 0\n")
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(tmp_path)
    cfg.DATA.TEST_CROP_SIZE = 48
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 2
    cfg.MODEL.NUM_CLASSES = 2
    return cfg


@pytest.mark.parametrize("height, width", [(96, 64), (64, 96)])
def test_dataset_crops_follow_the_long_side(tmp_path, height, width):
    cfg = _gradient_dataset(tmp_path, height, width)
    views = build_dataset(cfg, "test")[0]["inputs"]
    assert views.shape == (6, 3, 8, 48, 48)
    grey = views * 0.225 + 0.45  # undo normalisation -> [0, 1]
    means = [float(v.mean()) * 255 for v in grey[:3]]
    # Resized long side is 72; crops start at 0, 12, 24 of 72, i.e. 0, 1/6, 1/3 of the ramp.
    expected = [255 * (start + 24) / 72 for start in (0, 12, 24)]
    assert means == pytest.approx(expected, abs=6)
    # The gradient runs along the long side only: rows (portrait) or columns (landscape).
    image = grey[1, 0, 0]
    along, across = (image.mean(dim=1), image.mean(dim=0)) if height > width else (image.mean(dim=0), image.mean(dim=1))
    assert float(along[-1] - along[0]) > 0.4
    assert float(across.max() - across.min()) < 0.05


def _write_list(tmp_path, text, name="train.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, line, message", [
    ("a.mp4 0\nb.mp4\n", 2, "missing label"),
    ("a.mp4 0\n\nb.mp4 x\n", 3, "not an integer"),
    ("a.mp4 5\n", 1, "outside \\[0, 5\\)"),
    ("a.mp4 -1\n", 1, "outside"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, message):
    path = _write_list(tmp_path, text)
    with pytest.raises(DataListError, match=message) as err:
        read_video_list(path, separator=" ", prefix="", num_classes=5)
    assert f"{path}:{line}:" in str(err.value)


def test_list_paths_with_spaces_prefix_and_missing_file(tmp_path):
    path = _write_list(tmp_path, "dir a/my clip.mp4 3\n/abs/v.mp4 1\n")
    paths, labels = read_video_list(path, separator=" ", prefix="", num_classes=5)
    assert paths == [str(tmp_path / "dir a/my clip.mp4"), "/abs/v.mp4"] and labels == [3, 1]
    paths, _ = read_video_list(path, separator=" ", prefix="/data/k400", num_classes=5)
    assert paths[0] == "/data/k400/dir a/my clip.mp4"
    csv = _write_list(tmp_path, "x,y.mp4,2\n", name="val.csv")
    assert read_video_list(csv, separator=",", prefix="", num_classes=5)[0] == [str(tmp_path / "x,y.mp4")]
    with pytest.raises(DataListError, match="not found.*nope.csv"):
        read_video_list(str(tmp_path / "nope.csv"), separator=" ", prefix="", num_classes=5)
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(tmp_path)
    with pytest.raises(DataListError, match="test.csv"):
        build_dataset(cfg, "test")


def test_train_list_of_only_bad_videos_is_a_clear_list_error(tmp_path):
    _write_list(tmp_path, "gone_a.mp4 0\ngone_b.mp4 1\n")
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(tmp_path)
    dataset = build_dataset(cfg, "train")
    with pytest.raises(DataListError, match="videos in a row failed to decode.*gone_.\\.mp4.*file not found"):
        dataset[0]


def test_pyav_clamps_to_frames_actually_decoded(tmp_path):
    # Matroska stores no frame count: the decoder estimates it from duration x fps.
    path = write_indexed_video(str(tmp_path / "v.mkv"), 45, fps=30.0)
    decoder = open_video(path, "pyav")
    assert abs(decoder.num_frames - 45) <= 2
    # A header that over-counts (seen in the wild) must not fail: past-the-end is the last real frame.
    decoder.num_frames = 60
    frames = decoder.get_frames([10, 44, 52, 59])
    assert [read_frame_index(f) for f in frames] == [10, 44, 44, 44]
    decoder.close()


def test_train_clip_starts_spread_over_the_whole_window():
    # 300 frames at 30 fps, 8x8 clips: span 64, so a start lies in [0, 236].
    delta = 300 - clip_span(8, 8, 30.0, 30)
    starts = []
    for seed in range(400):
        clip = train_clip_indices(300, 30.0, num_frames=8, sampling_rate=8, target_fps=30,
                                  generator=torch.Generator().manual_seed(seed))
        starts.append(int(clip[0]))
    starts = np.array(starts)
    # Both ends are reached and both halves get about half of the draws.
    assert starts.min() <= 0.03 * delta and starts.max() >= 0.97 * delta
    second_half = float((starts > delta / 2).mean())
    assert 0.4 <= second_half <= 0.6, second_half


@pytest.mark.parametrize("frames, fps, expected", [
    # delta = 300 - 64 = 236, start 118, frames 118 + 9k.
    (300, 30.0, [118, 127, 136, 145, 154, 163, 172, 181]),
    # Odd delta 177: start 88.5, frames 88.5 + 9k truncated.
    (241, 30.0, [88, 97, 106, 115, 124, 133, 142, 151]),
    # Span 51.2 at 24 fps: start 74.4, step 50.2 / 7.
    (200, 24.0, [74, 81, 88, 95, 103, 110, 117, 124]),
    # Span 128 at 60 fps: start 1, step 127 / 7.
    (130, 60.0, [1, 19, 37, 55, 73, 91, 109, 128]),
    # Shorter than a clip: start 0, the last frame repeats.
    (20, 30.0, [0, 9, 18, 19, 19, 19, 19, 19]),
])
def test_single_centre_clip_exact_frames(frames, fps, expected):
    centre = eval_clip_indices(frames, fps, num_frames=8, sampling_rate=8, target_fps=30, num_clips=1)
    assert centre.tolist() == [expected]


def test_single_centre_crop_takes_the_ceiling_of_an_odd_margin():
    # Margins 13 and 53: the centre crop starts at ceil(6.5) = 7 and ceil(26.5) = 27.
    assert crop_offsets(61, 101, 48, 1) == [(7, 27)]
    assert crop_offsets(101, 61, 48, 1) == [(27, 7)]
    assert crop_offsets(61, 101, 48, 3) == [(7, 0), (7, 27), (7, 53)]
    video = torch.arange(61 * 101).reshape(1, 1, 61, 101)
    assert torch.equal(eval_crops(video, 48, 1)[0], video[..., 7:55, 27:75])


def _moving_frames(count: int, height: int = 48, width: int = 64, cut: int | None = None) -> np.ndarray:
    """Textured frames panning one pixel per frame, a new picture after ``cut`` (a scene cut)."""
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (height, width + count, 3), dtype=np.uint8) for _ in range(2)]
    return np.stack([scenes[int(cut is not None and i >= cut)][:, i:i + width] for i in range(count)])


def _write_vfr(path: str, frames: np.ndarray) -> str:
    """H.264 with B-frames whose frames are 1 or 2 ticks of 1/30 s apart (a variable frame rate)."""
    import av
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        pts = np.cumsum([0] + [1 + (i % 3 == 0) for i in range(len(frames) - 1)])
        for frame, t in zip(frames, pts.tolist()):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = t, fractions.Fraction(1, 30)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return path


def _write_avi(path: str, frames: np.ndarray, codec: str = "mpeg4") -> str:
    """MPEG-4 part 2 with 2 B-frames in an AVI file, as UCF-101 ships; or H.264 with x264's B-frames."""
    import av
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.max_b_frames, stream.codec_context.gop_size = 2, 40
        else:
            stream.options = {"crf": "23", "preset": "medium", "g": "40"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _write_hevc(path: str, frames: np.ndarray) -> str:
    """HEVC with x265's defaults (B-frames, keyframes every 250 frames and at scene cuts)."""
    import av
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx265", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"x265-params": "log-level=error"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("kind", ["x264_defaults", "hevc", "mpeg4_avi", "h264_avi", "vfr"])
def test_pyav_skipping_unwanted_frames_returns_the_frames_of_a_full_decode(tmp_path, kind):
    import av
    from video_gc.utils.video_io import VideoWriter
    frames = _moving_frames(150, cut=70)
    if kind == "x264_defaults":  # keyframes at 0 and the cut only, 3 B-frames, the pyramid
        path = str(tmp_path / "v.mp4")
        with VideoWriter(path, 64, 48, crf=23, preset="medium") as writer:
            for frame in frames:
                writer.write(frame)
    elif kind == "hevc":
        path = _write_hevc(str(tmp_path / "v.mp4"), frames)
    elif kind.endswith("_avi"):
        path = _write_avi(str(tmp_path / "v.avi"), frames, codec=kind.split("_")[0].replace("h264", "libx264"))
    else:
        path = _write_vfr(str(tmp_path / "v.mp4"), frames)
    with av.open(path) as container:
        decoded = list(container.decode(video=0))
        everything = [f.to_ndarray(format="rgb24") for f in decoded]
    # The fixture has frames worth skipping.
    assert sum(f.pict_type == av.video.frame.PictureType.B for f in decoded) > len(decoded) / 3
    rng = np.random.default_rng(1)
    skipping, full = open_video(path, "pyav"), open_video(path, "pyav")
    full.skip_unwanted = False
    for _ in range(12):
        start = int(rng.integers(1, skipping.num_frames - 40))
        wanted = list(range(start, start + 40, 5))
        got = skipping.get_frames(wanted)
        assert torch.equal(got, full.get_frames(wanted)), wanted
        if kind != "vfr":  # constant rate: frame i is the i-th frame decoded from the start
            assert np.array_equal(got.numpy(), np.stack([everything[i] for i in wanted])), wanted
    if kind.endswith("_avi"):
        # decord's own reading of these files returns other frames: PyAV reads them.
        chosen = open_video(path, "decord")
        assert type(chosen) is type(full)
        assert np.array_equal(chosen.get_frames([7, 60, 111]).numpy(), np.stack([everything[i] for i in (7, 60, 111)]))
        # AVI timestamps are no guide to which packet holds which frame: never skipped.
        assert not skipping.skip_unwanted and skipping.frames_decoded == full.frames_decoded
    else:
        assert skipping.frames_decoded < 0.8 * full.frames_decoded
    skipping.close()
    full.close()


@pytest.mark.parametrize("height, width, jitter, crop", [(90, 120, [100, 140], 96), (120, 90, [100, 140], 96),
                                                   (120, 126, [64, 100], 56), (126, 120, [64, 100], 56)])
def test_train_crop_cut_before_resizing_matches_resizing_the_whole_frame(height, width, jitter, crop):
    """The crop is drawn on the frame resized to the jittered short side, as PySlowFast draws it,
    but cut from the frame as decoded and resized alone; the pixels match resize-then-crop."""
    from torchvision.transforms.v2 import functional as F

    from video_gc.data import transforms as T
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    # Red is the column, green the row (up to 120 levels): where a pixel came from, in its colour.
    frame = torch.stack([cols * 2, rows * 2, (rows + cols) % 7 * 30]).to(torch.uint8)
    video = frame.expand(3, -1, -1, -1).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels last
    for seed in range(20):
        out = T.random_short_side_crop(video, jitter_scales=jitter, crop_size=crop,
                                       generator=torch.Generator().manual_seed(seed))
        # The same draws, by hand: short side, then top and left in the resized frame.
        generator = torch.Generator().manual_seed(seed)
        size = int(round(jitter[0] + (jitter[1] - jitter[0]) * torch.rand((), generator=generator,
                                                                        dtype=torch.float64).item()))
        resized = F.resize(video, [size], antialias=True)
        top = int(torch.randint(0, resized.shape[-2] - crop + 1, (), generator=generator))
        left = int(torch.randint(0, resized.shape[-1] - crop + 1, (), generator=generator))
        expected = resized[..., top:top + crop, left:left + crop]
        assert out.shape == expected.shape == (3, 3, crop, crop)
        difference = (out.float() - expected.float())[:, :2].abs()  # the two ramps
        # Within about one source pixel (2 levels) of where resize-then-crop takes each pixel.
        assert difference.mean() < 1.0 and difference.max() <= 4, (seed, difference.mean(), difference.max())
