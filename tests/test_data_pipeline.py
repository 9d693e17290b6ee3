"""Decode-once test views, bad videos, seeded workers and DDP sharding (video_gc.data)."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from video_gc.bench.data import per_view_views
from video_gc.config import get_cfg
from video_gc.data import (build_dataset, construct_loader, dedup_by_index, open_video, shuffle_loader,
                           write_coverage_report)
from video_gc.data import transforms as T
from video_gc.data.sampling import eval_clip_indices
from video_gc.data.synthetic_clips import make_indexed_dataset, read_frame_index

# (frames, fps): shorter than a clip, about one clip, long; at 24, 30 and 60 fps.
VIDEOS = [(20, 30.0), (66, 30.0), (240, 30.0), (50, 24.0), (200, 24.0), (130, 60.0), (400, 60.0)]


def small_cfg(data_dir, **overrides):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(data_dir)
    cfg.MODEL.NUM_CLASSES = 3
    cfg.DATA.TRAIN_JITTER_SCALES = [40, 56]
    cfg.DATA.TRAIN_CROP_SIZE = 32
    cfg.DATA.TEST_CROP_SIZE = 48
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 4
    cfg.TEST.NUM_SPATIAL_CROPS = 3
    cfg.TRAIN.BATCH_SIZE = 4
    cfg.TEST.BATCH_SIZE = 4
    cfg.DATA_LOADER.NUM_WORKERS = 0
    cfg.DATA_LOADER.PIN_MEMORY = False
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    make_indexed_dataset(str(root), VIDEOS)
    return root


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decode_once_equals_view_by_view(data_dir, backend):
    dataset = build_dataset(small_cfg(data_dir, **{"DATA.DECODING_BACKEND": backend}), "test")
    for index, (frames, fps) in enumerate(VIDEOS):
        views = dataset[index]["inputs"]
        assert views.shape == (12, 3, 8, 48, 48)
        # The naive reference re-opens and re-decodes the video for every one of the 12 views.
        assert torch.equal(views, per_view_views(dataset, index)), (frames, fps)
        # And the views hold the right frames: read the index drawn into each frame.
        expected = eval_clip_indices(frames, fps, num_frames=8, sampling_rate=8, target_fps=30, num_clips=4)
        pixels = (views * 0.225 + 0.45).mul(255).clamp(0, 255)
        for view in (0, 4, 11):
            got = [read_frame_index(pixels[view, :, t], channels_first=True) for t in range(8)]
            assert got == expected[view // 3].tolist(), (frames, fps, view)


class CountingDecoder:
    """Wraps a real decoder and records which frames were requested."""

    def __init__(self, decoder, log):
        self.decoder, self.log = decoder, log
        self.num_frames, self.fps = decoder.num_frames, decoder.fps

    def get_frames(self, indices):
        self.log.append(torch.as_tensor(indices).reshape(-1).tolist())
        return self.decoder.get_frames(indices)

    def close(self):
        self.decoder.close()


def test_decode_once_opens_once_and_decodes_only_needed_frames(data_dir, monkeypatch):
    import video_gc.data.dataset as dataset_module

    dataset = build_dataset(small_cfg(data_dir, **{"TEST.NUM_ENSEMBLE_VIEWS": 10}), "test")
    opened, requests = [], []

    def counting_open(path, backend):
        opened.append(path)
        return CountingDecoder(open_video(path, backend), requests)

    monkeypatch.setattr(dataset_module, "open_video", counting_open)
    dataset[6]  # 400 frames at 60 fps, 30 views
    assert len(opened) == 1 and len(requests) == 1
    asked = requests[0]
    assert len(asked) == len(set(asked)) <= 10 * 8  # each frame once, only frames the clips use
    assert len(asked) < 400 / 4


def _corrupt_videos(root):
    """Add one video of each bad kind to a copy of the lists; returns their paths."""
    good = os.path.join(root, "videos", "v2.mp4")
    bad = {
        "missing": os.path.join(root, "videos", "missing.mp4"),
        "empty": os.path.join(root, "videos", "empty.mp4"),
        "truncated": os.path.join(root, "videos", "truncated.mp4"),
        "garbage": os.path.join(root, "videos", "garbage.mp4"),
    }
    open(bad["empty"], "wb").close()
    data = open(good, "rb").read()
    with open(bad["truncated"], "wb") as handle:
        handle.write(data[: len(data) // 2])
    with open(bad["garbage"], "wb") as handle:
        handle.write(os.urandom(4096))
    lines = [f"videos/v{i}.mp4 {i % 3}\n" for i in range(3)]
    lines += [f"videos/{os.path.basename(p)} 1\n" for p in bad.values()]
    for split in ("train", "test", "val"):
        with open(os.path.join(root, f"{split}.csv"), "w") as handle:
            handle.writelines(lines)
    return bad


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("bad")
    shutil.copytree(os.path.join(data_dir, "videos"), os.path.join(root, "videos"))
    return root, _corrupt_videos(str(root))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_videos_in_training_are_replaced_and_reported(bad_dir, backend, caplog):
    root, bad = bad_dir
    cfg = small_cfg(root, **{"DATA.DECODING_BACKEND": backend, "TRAIN.BATCH_SIZE": 7})
    loader = construct_loader(cfg, "train")
    shuffle_loader(loader, 0)
    with caplog.at_level("WARNING", logger="video_gc.data.loader"):
        batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert batch["inputs"].shape == (7, 3, 8, 32, 32) and torch.isfinite(batch["inputs"]).all()
    # Replacements are good videos (indices 0-2) with their own labels.
    assert set(batch["indices"].tolist()) <= {0, 1, 2}
    assert batch["labels"].tolist() == [i % 3 for i in batch["indices"].tolist()]
    # Every bad file was hit (each is in the list once) and reported, none silently dropped.
    assert set(batch["skipped"]) >= set(bad.values())
    assert loader.skipped_this_epoch == batch["skipped"]
    logged = [r.getMessage() for r in caplog.records if "replaced by another draw" in r.getMessage()]
    assert sorted(logged) == sorted({f"bad video replaced by another draw: {p}" for p in batch["skipped"]})
    assert any("replaced this epoch" in r.getMessage() for r in caplog.records)
    # The replacement draw is deterministic for a seed.
    again = next(iter(construct_loader(cfg, "train")))
    assert torch.equal(again["indices"], batch["indices"]) and again["skipped"] == batch["skipped"]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_videos_in_testing_are_recorded_as_failed(bad_dir, backend, tmp_path):
    root, bad = bad_dir
    cfg = small_cfg(root, **{"DATA.DECODING_BACKEND": backend, "TEST.BATCH_SIZE": 2})
    loader = construct_loader(cfg, "test")
    batches = list(loader)
    indices = torch.cat([b["indices"] for b in batches]).tolist()
    failed = [f for b in batches for f in b["failed"]]
    assert indices == [0, 1, 2]
    for b in batches:  # only decoded videos in the tensors, failed ones listed beside them
        assert b["inputs"].shape[0] == len(b["labels"]) == len(b["indices"])
        assert b["inputs"].shape[1:] == (12, 3, 8, 48, 48)
    assert {(i, p) for i, p, _ in failed} == {(3 + k, p) for k, p in enumerate(bad.values())}
    reasons = {p: r for _, p, r in failed}
    assert reasons[bad["missing"]] == "file not found" and "0 bytes" in reasons[bad["empty"]]
    line = write_coverage_report(len(loader.dataset), failed, str(tmp_path))
    assert line == "3 / 7 videos evaluated, 4 failed (failed_videos.txt)"
    rows = (tmp_path / "failed_videos.txt").read_text().splitlines()
    assert [r.split("\t")[1] for r in rows] == list(bad.values())
    # Val uses the same rule: one centre view per decoded video, failures listed.
    val = list(construct_loader(cfg, "val"))
    assert sum(len(b["failed"]) for b in val) == 4 and val[0]["inputs"].shape[1:] == (3, 8, 48, 48)


def test_coverage_line_formats_thousands():
    from video_gc.data import coverage_line

    assert coverage_line(4784, 8) == "4,776 / 4,784 videos evaluated, 8 failed (failed_videos.txt)"
    assert coverage_line(12, 0) == "12 / 12 videos evaluated, 0 failed"


def _train_batches(cfg, epochs=(0, 1)):
    loader = construct_loader(cfg, "train")
    out = []
    for epoch in epochs:
        shuffle_loader(loader, epoch)
        out.append([(b["indices"], b["inputs"]) for b in loader])
    return out


def test_same_seed_gives_same_clips_with_any_worker_count(data_dir):
    zero = _train_batches(small_cfg(data_dir, **{"DATA_LOADER.NUM_WORKERS": 0}))
    two = _train_batches(small_cfg(data_dir, **{"DATA_LOADER.NUM_WORKERS": 2}))
    for epoch_a, epoch_b in zip(zero, two):
        assert len(epoch_a) == len(epoch_b) == 1
        for (ia, xa), (ib, xb) in zip(epoch_a, epoch_b):
            assert torch.equal(ia, ib) and torch.equal(xa, xb)
    # Epochs differ, and another seed differs.
    assert not torch.equal(zero[0][0][1], zero[1][0][1])
    other = _train_batches(small_cfg(data_dir, **{"RNG_SEED": 7}), epochs=(0,))
    assert not torch.equal(other[0][0][1], zero[0][0][1])


def test_relative_area_crop_recipe(data_dir):
    cfg = small_cfg(data_dir, **{"DATA.TRAIN_JITTER_SCALES_RELATIVE": [0.75, 1.0],
                                 "DATA.TRAIN_JITTER_ASPECT_RELATIVE": [0.75, 1.3333]})
    item = build_dataset(cfg, "train")[2]
    assert item["inputs"].shape == (3, 8, 32, 32) and item["skipped"] == []
    plain = build_dataset(small_cfg(data_dir), "train")[2]
    assert not torch.equal(item["inputs"], plain["inputs"])
    # The whole frame at its own aspect ratio is exactly a resize of the frame.
    video = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    whole = T.random_area_crop(video, area_range=[1.0, 1.0], aspect_range=[1.5, 1.5], crop_size=24,
                               generator=torch.Generator().manual_seed(0))
    from torchvision.transforms.v2 import functional as F

    assert torch.equal(whole, F.resize(video, [24, 24], antialias=True))


def test_train_list_smaller_than_a_batch_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        construct_loader(small_cfg(data_dir, **{"TRAIN.BATCH_SIZE": 16}), "train")


def test_padded_sampler_duplicates_are_removed_by_index():
    from video_gc.data import ShardedEvalSampler

    shards = [list(ShardedEvalSampler(7, num_replicas=3, rank=r, pad=True)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = torch.tensor([i for s in shards for i in s])
    scores = flat.float()[:, None] * 10
    indices, dedup_scores = dedup_by_index(flat, scores)
    assert indices.tolist() == list(range(7)) and dedup_scores[:, 0].tolist() == [10.0 * i for i in range(7)]
    unpadded = [list(ShardedEvalSampler(7, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in unpadded for i in s) == list(range(7))


def _ddp_worker(rank, world, data_dir, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for pad in (False, True):
            cfg = small_cfg(data_dir, **{"TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1,
                                         "TEST.BATCH_SIZE": 4})
            loader = construct_loader(cfg, "test", pad_eval=pad)
            mine = [(b["indices"], b["inputs"].flatten(1)[:, :4]) for b in loader]
            indices = torch.cat([m[0] for m in mine])
            gathered = [None] * world
            dist.all_gather_object(gathered, indices.tolist())
            if rank == 0:
                with open(os.path.join(out_dir, f"pad{int(pad)}.txt"), "w") as handle:
                    handle.write(";".join(",".join(map(str, g)) for g in gathered))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_test_items_cover_every_video_once(data_dir, tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(data_dir), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    n = len(VIDEOS)
    unpadded = [[int(i) for i in part.split(",") if i] for part in (tmp_path / "pad0.txt").read_text().split(";")]
    assert len(unpadded) == 2 and all(unpadded)
    assert sorted(unpadded[0] + unpadded[1]) == list(range(n))  # exactly once, no dedup needed
    padded = [[int(i) for i in part.split(",") if i] for part in (tmp_path / "pad1.txt").read_text().split(";")]
    flat = torch.tensor(padded[0] + padded[1])
    assert len(flat) == n + 1 and len(padded[0]) == len(padded[1])  # one repeat makes shards even
    assert dedup_by_index(flat)[0].tolist() == list(range(n))


def test_val_item_is_the_exact_centre_clip(data_dir):
    dataset = build_dataset(small_cfg(data_dir), "val")
    for index, (frames, fps) in enumerate(VIDEOS):
        view = dataset[index]["inputs"]
        assert view.shape == (3, 8, 48, 48)
        pixels = (view * 0.225 + 0.45).mul(255).clamp(0, 255)
        got = [read_frame_index(pixels[:, t], channels_first=True) for t in range(8)]
        expected = eval_clip_indices(frames, fps, num_frames=8, sampling_rate=8, target_fps=30, num_clips=1)
        assert got == expected[0].tolist(), (frames, fps)


def _write_frames(tmp_path, frames, copies):
    from video_gc.utils.video_io import write_video

    write_video(str(tmp_path / "v.mp4"), frames, fps=30.0)
    (tmp_path / "train.csv").write_text("v.mp4 0\n" * copies)


def test_training_flip_rate_is_a_half_and_zero_when_off(tmp_path):
    # Grey rises from left to right: a flipped crop falls instead.
    ramp = np.linspace(0, 255, 80).round().astype(np.uint8)
    frames = np.repeat(np.broadcast_to(ramp[None, None, :, None], (1, 64, 80, 3)), 16, axis=0)
    _write_frames(tmp_path, np.ascontiguousarray(frames), copies=120)

    def flipped(random_flip):
        dataset = build_dataset(small_cfg(tmp_path, **{"DATA.RANDOM_FLIP": random_flip}), "train")
        result = []
        for i in range(len(dataset)):
            grey = dataset[i]["inputs"][0].mean(dim=(0, 1))  # one channel, mean over time and rows
            assert abs(float(grey[-1] - grey[0])) > 0.5  # a clear slope either way
            result.append(bool(grey[-1] < grey[0]))
        return result

    on = flipped(True)
    assert 0.4 <= sum(on) / len(on) <= 0.6, sum(on)
    assert sum(flipped(False)) == 0


def test_training_item_denormalises_to_the_decoded_pixels(tmp_path):
    frames = np.empty((16, 64, 80, 3), np.uint8)
    frames[:] = (200, 90, 30)
    _write_frames(tmp_path, frames, copies=4)
    mean, std = [0.3, 0.5, 0.7], [0.2, 0.25, 0.3]
    cfg = small_cfg(tmp_path, **{"DATA.MEAN": mean, "DATA.STD": std})
    decoder = open_video(str(tmp_path / "v.mp4"), "decord")
    pixel = decoder.get_frames([0])[0, 32, 40].double()  # flat colour after H.264: about one value per channel
    decoder.close()
    assert pixel.sub(torch.tensor([200.0, 90.0, 30.0], dtype=torch.float64)).abs().max() <= 4
    dataset = build_dataset(cfg, "train")
    for i in range(len(dataset)):
        inputs = dataset[i]["inputs"].double()
        assert inputs.shape == (3, 8, 32, 32)
        restored = (inputs * torch.tensor(std).view(3, 1, 1, 1) + torch.tensor(mean).view(3, 1, 1, 1)) * 255
        # Within one grey level: a few decoded frames differ from frame 0 by one.
        torch.testing.assert_close(restored, pixel.view(3, 1, 1, 1).expand_as(restored), atol=1.001, rtol=0)
