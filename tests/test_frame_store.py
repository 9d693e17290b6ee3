"""JPEG frame stores (DATA.FORMAT frames), repeated augmentation (AUG.NUM_SAMPLE) and persistent workers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from test_data_pipeline import small_cfg
from video_gc.config import ConfigError, load_config
from video_gc.data import build_dataset, construct_loader, open_video, shuffle_loader
from video_gc.data.dataset import item_generator
from video_gc.data.decoder import FRAME_STORE_HEADER, FRAME_STORE_INDEX
from video_gc.data.sampling import train_clip_indices
from video_gc.data.synthetic_clips import make_indexed_dataset, read_frame_index
from video_gc.prep.check import check_list
from video_gc.prep.frame_store import SETTINGS_FILE, FrameStoreJob, make_frame_store, partial_path, \
    probe_frame_store, write_frame_store
from video_gc.prep.lists import PrepError
from video_gc.utils.video_io import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "data_prep", "make_frame_store.py")
# (frames, fps): shorter than a clip, about one clip, one clip at 60 fps, 24 fps, long.
VIDEOS = [(20, 30.0), (66, 30.0), (130, 60.0), (50, 24.0), (240, 30.0)]
MEAN, STD = 0.45, 0.225


def _cfg(data_dir, **overrides):
    # 64-pixel crops of the 64x96 frames keep every band of the frame index whole.
    return small_cfg(data_dir, **{"DATA.TRAIN_JITTER_SCALES": [64, 64], "DATA.TRAIN_CROP_SIZE": 64,
                                  "DATA.TEST_CROP_SIZE": 64, "TEST.NUM_ENSEMBLE_VIEWS": 3, "TRAIN.BATCH_SIZE": 2,
                                  "TEST.BATCH_SIZE": 2, **overrides})


def _pixels(inputs):
    """Normalised inputs back to grey levels."""
    return (inputs * STD + MEAN) * 255


def _smooth_video(path, num_frames=24, height=96, width=128):
    """A smooth colour field panning across the frame: natural-image statistics for JPEG."""
    rng = np.random.default_rng(0)
    cells = torch.from_numpy(rng.uniform(40, 215, size=(1, 3, 4, 6))).float()
    field = Fn.interpolate(cells, size=(height + num_frames, width + 2 * num_frames), mode="bicubic",
                           align_corners=False).clamp(0, 255)[0].round().byte()
    frames = np.stack([field[:, i:i + height, 2 * i:2 * i + width].permute(1, 2, 0).numpy() for i in range(num_frames)])
    return write_video(str(path), frames, fps=30.0)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(source data folder, frame-store data folder) of the indexed videos."""
    root = tmp_path_factory.mktemp("frame_store")
    src, out = root / "src", root / "out"
    make_indexed_dataset(str(src), VIDEOS)
    summary = make_frame_store([str(src / f"{s}.csv") for s in ("train", "val", "test")], str(out), verbose=False)
    assert (summary["written"], summary["skipped"], summary["failed"]) == (5, 0, 0)
    return src, out


def test_store_layout_is_plain_numpy_and_the_lists_point_at_it(stores):
    src, out = stores
    assert (out / "train.csv").read_text() == "".join(f"videos/v{i}.frames {i % 3}\n" for i in range(5))
    for i, (frames, fps) in enumerate(VIDEOS):
        path = out / "videos" / f"v{i}.frames"
        data = path.read_bytes()
        header = np.frombuffer(data[:FRAME_STORE_HEADER.itemsize], dtype=FRAME_STORE_HEADER)[0]
        assert (header["num_frames"], header["fps"], header["width"], header["height"]) == (frames, fps, 96, 64)
        offsets = np.frombuffer(data[header["index_offset"]:], dtype=FRAME_STORE_INDEX)
        assert len(offsets) == frames + 1 and offsets[-1] == header["index_offset"]
        # Each byte range is one JPEG image: its frame, as the video decoders give it.
        store = open_video(str(path), "frames")
        for name in ("decord", "pyav"):
            video = open_video(str(src / "videos" / f"v{i}.mp4"), name)
            assert (video.num_frames, video.fps) == (store.num_frames, store.fps)
            video.close()
        last = torch.frombuffer(bytearray(data[offsets[-2]:offsets[-1]]), dtype=torch.uint8)
        from torchvision.io import decode_jpeg

        assert torch.equal(decode_jpeg(last).permute(1, 2, 0), store.get_frames([frames - 1])[0])
        got = store.get_frames([5, 0, 5, frames + 10])  # any order, repeats, clamped past the end
        assert [read_frame_index(f) for f in got] == [5, 0, 5, frames - 1]
        store.close()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_train_and_test_items_match_the_source_videos(stores, backend):
    src, out = stores
    video = {s: build_dataset(_cfg(src, **{"DATA.DECODING_BACKEND": backend}), s) for s in ("train", "test")}
    frames = {s: build_dataset(_cfg(out, **{"DATA.FORMAT": "frames"}), s) for s in ("train", "test")}
    for epoch in (0, 3):
        video["train"].set_epoch(epoch)
        frames["train"].set_epoch(epoch)
        for i, (num, fps) in enumerate(VIDEOS):
            a, b = _pixels(video["train"][i]["inputs"]), _pixels(frames["train"][i]["inputs"])
            # The same clip position as a fresh draw from the item's seed (fps jitter off).
            expected = train_clip_indices(num, fps, num_frames=8, sampling_rate=8, target_fps=30,
                                          generator=item_generator(1, epoch, i, 0)).tolist()
            for x in (a, b):
                assert [read_frame_index(x[:, t].clamp(0, 255), channels_first=True) for t in range(8)] == expected
            assert (a - b).abs().mean() < 3
    for i in range(len(VIDEOS)):
        decoders = [open_video(video["test"].paths[i], backend), open_video(frames["test"].paths[i], "frames")]
        ids = [video["test"].eval_frame_ids(decoders[0]), frames["test"].eval_frame_ids(decoders[1])]
        assert torch.equal(ids[0], ids[1])
        for d in decoders:
            d.close()
        views = frames["test"][i]["inputs"]
        assert views.shape == (9, 3, 8, 64, 64)
        assert (_pixels(video["test"][i]["inputs"]) - _pixels(views)).abs().mean() < 3


def test_jpeg_error_at_quality_90_is_small(tmp_path):
    source = _smooth_video(tmp_path / "smooth.mp4")
    decoded = open_video(source, "decord").get_frames(range(24)).float()
    error = {}
    for quality in (90, 10):
        store = str(tmp_path / f"q{quality}.frames")
        assert write_frame_store(FrameStoreJob(source, store, quality=quality)) == 24
        error[quality] = float((open_video(store, "frames").get_frames(range(24)).float() - decoded).abs().mean())
    assert error[90] < 3 < error[10], error


def test_interrupted_prep_resumes_and_never_counts_a_partial_file(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_indexed_dataset(str(src), [(60, 30.0)] * 30, splits=("train",))
    cmd = [sys.executable, SCRIPT, "--list", str(src / "train.csv"), "--output", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def done():
        return [n for n in os.listdir(out / "videos") if ".partial" not in n] if (out / "videos").exists() else []

    deadline = time.time() + 60
    while time.time() < deadline and not done():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = done()
    assert 1 <= len(finished) < 30 and not (out / "train.csv").exists()
    for name in finished:  # whatever looks finished is complete
        assert probe_frame_store(str(out / "videos" / name)).frames == 60
    # A half-written final file (e.g. a copy cut short) and a leftover temporary file are both redone.
    victim = out / "videos" / finished[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    leftover = out / "videos" / "v29.partial.frames"
    leftover.write_bytes(b"\0" * 500)
    make_frame_store([str(src / "train.csv")], str(out))  # the script's call, in this process
    summary = capsys.readouterr().out
    assert f"{31 - len(finished)} written, {len(finished) - 1} already there; 0 missing, 0 failed" in summary
    assert sorted(os.listdir(out / "videos")) == sorted(f"v{i}.frames" for i in range(30))
    assert (out / "train.csv").read_text() == "".join(f"videos/v{i}.frames {i % 3}\n" for i in range(30))
    for i in range(30):
        assert probe_frame_store(str(out / "videos" / f"v{i}.frames")).frames == 60
    make_frame_store([str(src / "train.csv")], str(out))
    assert "nothing to do: 30 of 30 outputs already exist and decode" in capsys.readouterr().out


def test_bad_sources_are_reported_and_left_out_of_the_lists(tmp_path):
    src = tmp_path / "src"
    make_indexed_dataset(str(src), [(12, 30.0)], splits=("train",))
    (src / "videos" / "garbage.mp4").write_bytes(os.urandom(2000))
    with open(src / "train.csv", "a") as handle:
        handle.write("videos/garbage.mp4 1\nvideos/gone.mp4 2\n")
    (src / "classids.json").write_text('{"a": 0, "b": 1, "c": 2}\n')
    summary = make_frame_store([str(src / "train.csv")], str(tmp_path / "out"), verbose=False)
    assert (summary["written"], summary["missing"], summary["failed"]) == (1, 1, 1)
    assert (tmp_path / "out" / "train.csv").read_text() == "videos/v0.frames 0\n"
    assert (tmp_path / "out" / "classids.json").read_text() == '{"a": 0, "b": 1, "c": 2}\n'
    report = (tmp_path / "out" / "frame_store_report.csv").read_text()
    assert "garbage.mp4,failed" in report and "gone.mp4,missing,source file not found" in report
    assert not list((tmp_path / "out" / "videos").glob("*partial*"))


def _bad_stores(out, folder):
    """Copies of the good stores plus a truncated, a corrupt-JPEG, a garbage and a missing store."""
    folder.mkdir()
    for name in ("v0", "v1"):
        shutil.copyfile(out / "videos" / f"{name}.frames", folder / f"{name}.frames")
    data = (out / "videos" / "v2.frames").read_bytes()
    (folder / "truncated.frames").write_bytes(data[: len(data) // 2])
    header = np.frombuffer(data[:FRAME_STORE_HEADER.itemsize], dtype=FRAME_STORE_HEADER)[0]
    offsets = np.frombuffer(data[header["index_offset"]:], dtype=FRAME_STORE_INDEX)
    corrupt = bytearray(data)
    # Frames 60-80 of 130 zeroed: wider than the frame spacing of any clip, so every clip needs one.
    corrupt[int(offsets[60]):int(offsets[81])] = bytes(int(offsets[81] - offsets[60]))
    (folder / "corrupt.frames").write_bytes(bytes(corrupt))
    (folder / "garbage.frames").write_bytes(os.urandom(3000))
    names = ["v0", "v1", "truncated", "corrupt", "garbage", "missing"]
    return [f"{folder.name}/{n}.frames" for n in names]


def test_check_videos_flags_truncated_and_corrupt_stores(stores, tmp_path):
    _, out = stores
    paths = _bad_stores(out, tmp_path / "stores")
    (tmp_path / "train.csv").write_text("".join(f"{p} 0\n" for p in paths))
    summary = check_list(str(tmp_path / "train.csv"), min_frames=30, verbose=False)
    assert (summary["entries"], summary["kept"], summary["missing"], summary["unreadable"], summary["too-short"]) == \
        (6, 1, 1, 3, 1)
    assert (tmp_path / "train.clean.csv").read_text() == "stores/v1.frames 0\n"
    report = (tmp_path / "train.clean.report.csv").read_text()
    assert "truncated or corrupt: " in report  # the whole file is checked in chunks of 64 frames
    assert "corrupt JPEG among the 64 frames read (0 to 63): Not a JPEG file" in report
    assert "not a frame-store file" in report and "20 frames < 30" in report


def test_bad_stores_are_replaced_in_training_and_failed_in_testing(stores, tmp_path):
    _, out = stores
    paths = _bad_stores(out, tmp_path / "stores")
    # A store listed while DATA.FORMAT says video is a bad file with a clear reason too.
    lines = "".join(f"{p} {i % 3}\n" for i, p in enumerate(paths))
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text(lines)
    cfg = _cfg(tmp_path, **{"DATA.FORMAT": "frames", "TRAIN.BATCH_SIZE": 6})
    loader = construct_loader(cfg, "train")
    shuffle_loader(loader, 0)
    batches = list(loader)
    assert len(batches) == 1 and batches[0]["inputs"].shape == (6, 3, 8, 64, 64)
    assert set(batches[0]["indices"].tolist()) <= {0, 1}
    bad = {str(tmp_path / p) for p in paths[2:]}
    assert set(loader.skipped_this_epoch) == bad  # every bad store was drawn once and counted
    test = list(construct_loader(cfg, "test"))
    assert torch.cat([b["indices"] for b in test]).tolist() == [0, 1]
    failed = {path: reason for b in test for _, path, reason in b["failed"]}
    assert set(failed) == bad
    assert failed[str(tmp_path / paths[5])] == "file not found"
    assert failed[str(tmp_path / paths[2])].startswith("truncated or corrupt")
    video = build_dataset(_cfg(tmp_path), "test")[0]
    assert "set DATA.FORMAT frames" in video["failed"][2]


def test_repeated_augmentation_decodes_once_and_gives_distinct_clips(stores, monkeypatch):
    import video_gc.data.dataset as dataset_module

    _, out = stores
    cfg = _cfg(out, **{"DATA.FORMAT": "frames", "AUG.NUM_SAMPLE": 2})
    opened = []

    def counting_open(path, backend):
        opened.append(path)
        return open_video(path, backend)

    monkeypatch.setattr(dataset_module, "open_video", counting_open)
    dataset = build_dataset(cfg, "train")
    item = dataset[4]  # 240 frames: room for clips at different positions
    assert len(opened) == 1
    assert item["inputs"].shape == (2, 3, 8, 64, 64) and dataset.input_shape == (2, 3, 8, 64, 64)
    assert torch.equal(build_dataset(cfg, "train")[4]["inputs"], item["inputs"])  # deterministic per seed
    assert not torch.equal(item["inputs"][0], item["inputs"][1])
    # Each clip at its own position: the item generator's first two draws, in order.
    generator = item_generator(1, 0, 4, 0)
    for clip in item["inputs"]:
        expected = train_clip_indices(240, 30.0, num_frames=8, sampling_rate=8, target_fps=30, generator=generator)
        got = [read_frame_index(_pixels(clip[:, t]).clamp(0, 255), channels_first=True) for t in range(8)]
        assert got == expected.tolist()
    # A batch of 2 items carries 4 clips, each counted with its item's label and index.
    loader = construct_loader(cfg, "train")
    shuffle_loader(loader, 0)
    batch = next(iter(loader))
    assert batch["inputs"].shape == (4, 3, 8, 64, 64)
    assert batch["indices"][0::2].tolist() == batch["indices"][1::2].tolist()
    assert batch["labels"].tolist() == [i % 3 for i in batch["indices"].tolist()]
    first = build_dataset(cfg, "train")[int(batch["indices"][0])]["inputs"]
    assert torch.equal(batch["inputs"][:2], first)
    # The same batch as uint8 for the device to normalise: channels-last rows, the same numbers.
    from video_gc.data.transforms import normalize_batch
    uint8_loader = construct_loader(cfg, "train", uint8_clips=True)
    shuffle_loader(uint8_loader, 0)
    uint8 = next(iter(uint8_loader))["inputs"]
    assert uint8.dtype == torch.uint8 and uint8.shape == (4, 3, 8, 64, 64) and uint8.movedim(1, -1).is_contiguous()
    assert torch.equal(normalize_batch(uint8, [MEAN] * 3, [STD] * 3), batch["inputs"])


def test_persistent_workers_reseed_every_epoch_like_zero_workers(stores):
    src, _ = stores

    def epochs(workers):
        cfg = _cfg(src, **{"DATA_LOADER.NUM_WORKERS": workers, "DATA.TRAIN_JITTER_SCALES": [64, 80]})
        loader = construct_loader(cfg, "train")
        assert loader.persistent_workers == (workers > 0)
        out, pids = [], []
        for epoch in (0, 1):
            shuffle_loader(loader, epoch)
            out.append([(b["indices"], b["inputs"]) for b in loader])
            if workers:
                pids.append([w.pid for w in loader._iterator._workers])
            next(iter(loader))  # a pass left unfinished, as precise BN does
        return out, pids

    zero, _ = epochs(0)
    two, pids = epochs(2)
    assert pids[0] == pids[1]  # the same worker processes served both epochs
    for epoch_a, epoch_b in zip(zero, two):
        assert len(epoch_a) == len(epoch_b) == 2
        for (ia, xa), (ib, xb) in zip(epoch_a, epoch_b):
            assert torch.equal(ia, ib) and torch.equal(xa, xb)
    # Epochs differ, so workers left with a stale epoch would not match.
    first = {int(i): x for b in zero[0] for i, x in zip(*b)}
    second = {int(i): x for b in zero[1] for i, x in zip(*b)}
    assert any(not torch.equal(first[i], second[i]) for i in first.keys() & second.keys())


def test_new_keys_are_validated():
    with pytest.raises(ConfigError, match="DATA.FORMAT: invalid value 'jpeg'; allowed values: video, frames"):
        load_config(None, ["DATA.FORMAT", "jpeg"])
    with pytest.raises(ConfigError, match="AUG.NUM_SAMPLE: invalid value 0; allowed values: a positive integer"):
        load_config(None, ["AUG.NUM_SAMPLE", "0"])
    with pytest.raises(ConfigError, match="DATA_LOADER.PREFETCH_FACTOR: invalid value 0"):
        load_config(None, ["DATA_LOADER.PREFETCH_FACTOR", "0"])


def test_a_store_folder_refuses_other_settings_and_changes_nothing(stores):
    src, out = stores
    lists = [str(src / f"{s}.csv") for s in ("train", "val", "test")]
    before = {name: os.path.getmtime(os.path.join(d, name)) for d, _, names in os.walk(out) for name in names}
    assert json.loads((out / SETTINGS_FILE).read_text()) == {"quality": 90, "short_side": 0}
    done = subprocess.run([sys.executable, SCRIPT, "--list", *lists, "--output", str(out), "--quality", "75"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert (f"error: {out} was stored with --quality 90, --short-side 0" in done.stderr
            and "this run asks for --quality 75, --short-side 0" in done.stderr), done.stderr
    with pytest.raises(PrepError, match="asks for --quality 90, --short-side 48"):
        make_frame_store(lists, str(out), short_side=48, verbose=False)
    after = {name: os.path.getmtime(os.path.join(d, name)) for d, _, names in os.walk(out) for name in names}
    assert after == before
    # The same settings again: every store is kept.
    assert make_frame_store(lists, str(out), verbose=False)["skipped"] == 5
    # A damaged record is one clear error, not a traceback.
    record = (out / SETTINGS_FILE).read_text()
    (out / SETTINGS_FILE).write_text("{")
    try:
        with pytest.raises(PrepError, match="is not a frame-store settings record"):
            make_frame_store(lists, str(out), verbose=False)
    finally:
        (out / SETTINGS_FILE).write_text(record)
