"""The training input path benchmark (tools/benchmark_data.py --train): the rows it prints and ratios
that follow from the times it printed (never the times themselves); the source videos it generates
have x264's default GOP structure; the PySlowFast-way decode and the floor's decode return the frames
they claim."""

import glob
import importlib.util
import os
import re
import sys

import av
import numpy as np
import pytest
import torch

from video_gc.bench.train_data import (FLOOR, FLOOR_ITEM, JPEG_FLOOR, Storage, decode_clip_jpegs, decode_exact_frames,
                                       format_train_table, make_frame_store_storage, pytorchvideo_clips,
                                       pyslowfast_clip_frames, rows_for)
from video_gc.config import load_config
from video_gc.data.dataset import VideoDataset
from video_gc.data.synthetic_clips import indexed_frames, make_indexed_dataset, read_frame_index, write_indexed_video
from video_gc.utils.video_io import VideoWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "source: x264 defaults (keyint 250 + scene cuts, B-frames)"
STORE = "frame store (JPEG quality 90)"
ALTERNATIVES = ["PyTorchVideo LabeledVideoDataset", "PySlowFast's way (our reimplementation)"]


def tool_main():
    spec = importlib.util.spec_from_file_location("benchmark_data", os.path.join(REPO, "tools", "benchmark_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def dataset_cfg(folder):
    return load_config(None, ["DATA.PATH_TO_DATA_DIR", str(folder)])


def keyframes_and_bframes(path):
    """Keyframe numbers in presentation order, and whether any frame is coded after a later one (B-frames)."""
    with av.open(path) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.pts is not None]
    reordered = any(a[0] > b[0] for a, b in zip(packets, packets[1:]))
    return [i for i, (_, key) in enumerate(sorted(packets)) if key], reordered


def table_rows(out):
    """(storage, row) -> the cells of every body line of the printed markdown table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 9 and cells[0] not in ("storage",) and not cells[0].startswith("-"):
            rows[(cells[0], cells[3])] = cells
    return rows


def ratios(out, head):
    """{storage: ratio} from a ``head: storage x; storage y`` line."""
    line = next(line for line in out.splitlines() if line.startswith(head))
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"\s*(.+?) (\d+\.\d+)(?:;|$)", line[len(head):])}


def test_train_benchmark_rows_and_ratios(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", os.environ.get("THP_MEM_ALLOC_ENABLE", "0"))  # the tool sets it
    code = tool_main()(["--train", "--count", "2", "--clips", "2", "--seconds", "2", "--gops", "4",
                        "--backends", "decord", "--cache-dir", str(tmp_path),
                        "--opts", "DATA.TRAIN_CROP_SIZE", "112", "DATA.TRAIN_JITTER_SCALES", "[128, 160]"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = table_rows(out)
    ours = "ours (decord)"
    storages = {SOURCE: [ours] + ALTERNATIVES, "resized --gop 4": [ours] + ALTERNATIVES,
                "resized --gop 1 (all-intra)": [ours] + ALTERNATIVES + [FLOOR, FLOOR_ITEM],
                STORE: ["ours (frames)", JPEG_FLOOR]}
    assert list(rows) == [(storage, row) for storage, names in storages.items() for row in names]
    assert out.splitlines()[0].startswith("training clips (8x8, crop 112; every row ends with clips as uint8, "
                                          "normalised on the GPU (a CUDA run)), 2 videos x 2 clips, source 340x256;")
    assert "not run" not in out
    ms = {key: float(cells[4]) for key, cells in rows.items()}
    for (storage, row), cells in rows.items():
        # every figure of a line follows from its CPU ms, as printed (2 decimals)
        per_core = 1000 / ms[storage, row]
        assert float(cells[5]) == pytest.approx(per_core, abs=0.05 + 0.005 * per_core / ms[storage, row])
        assert float(cells[6]) == pytest.approx(ms[storage, row], abs=0.051)
        first = storages[storage][0]  # the storage's "ours"
        assert float(cells[8]) == pytest.approx(ms[storage, first] / ms[storage, row], rel=0.01, abs=0.006)
        assert float(cells[7]) > 0
    ours_ms = {storage: ms[storage, names[0]] for storage, names in storages.items()}
    floors = {FLOOR: "resized --gop 1 (all-intra)", FLOOR_ITEM: "resized --gop 1 (all-intra)", JPEG_FLOOR: STORE}
    for floor, where in floors.items():
        assert ratios(out, f"ours / {floor}:") == pytest.approx(
            {storage: ours_ms[storage] / ms[where, floor] for storage in storages}, rel=0.01, abs=0.006)
    assert ratios(out, "ours / ours on the source:") == pytest.approx(
        {storage: ours_ms[storage] / ours_ms[SOURCE] for storage in list(storages)[1:]}, abs=0.006)
    # sizes: the all-intra copy is the biggest; the --gop 4 one is compared with the --gop 250 re-encode
    mb = {storage: float(rows[storage, names[0]][1]) for storage, names in storages.items()}
    reference = float(re.search(r"--gop 250 \(x264's own interval\): (\d+\.\d+) MB / video", out).group(1))
    assert mb["resized --gop 1 (all-intra)"] > mb["resized --gop 4"] > 0
    assert float(rows["resized --gop 4", ours][2].rstrip("%")) == pytest.approx(
        100 * (mb["resized --gop 4"] / reference - 1), abs=2.0)
    assert rows[SOURCE, ours][2] == "" and rows[STORE, "ours (frames)"][2] == ""
    # the store: one file per video, its size as printed; bigger than the --gop 4 re-encode
    stores = glob.glob(str(tmp_path / "resized" / "*" / "frames256" / "*.frames"))
    assert len(stores) == 2
    assert mb[STORE] == pytest.approx(sum(map(os.path.getsize, stores)) / 2 / 1e6, abs=0.0006)
    assert mb[STORE] > mb["resized --gop 4"]
    # the generated sources: keyframes only at the start and at scene cuts, B-frames, nothing like --gop 4
    for name in ("kinetics_like_2s_000.mp4", "kinetics_like_2s_001.mp4"):
        keys, reordered = keyframes_and_bframes(str(tmp_path / name))
        assert keys[0] == 0 and len(keys) <= 3 and reordered
        assert max(np.diff(keys + [60])) > 4


def test_pyslowfast_way_and_floor_decode_the_frames_they_claim(tmp_path):
    path = write_indexed_video(str(tmp_path / "v.mp4"), 150, fps=30.0)  # x264 defaults: one keyframe
    starts = set()
    for seed in range(4):
        frames = pyslowfast_clip_frames(path, num_frames=8, sampling_rate=8, target_fps=30,
                                        generator=torch.Generator().manual_seed(seed))
        assert frames.shape == (8, 64, 96, 3) and frames.dtype == torch.uint8
        ids = [read_frame_index(frame) for frame in frames]
        # 8 positions spread over the 64-frame window plus the frame after it: every 9th frame
        assert np.diff(ids).tolist() == [9] * 7 and 0 <= ids[0] and ids[-1] <= 149
        starts.add(ids[0])
    assert len(starts) > 1  # a random window
    intra = str(tmp_path / "intra.mp4")
    with VideoWriter(intra, 96, 64, fps=30.0, gop=1) as writer:
        for frame in indexed_frames(150, 64, 96):
            writer.write(frame)
    assert keyframes_and_bframes(intra)[0] == list(range(150))
    wanted = [3, 11, 19, 27, 100, 149]
    for video in (intra, path):
        assert [read_frame_index(f) for f in decode_exact_frames(video, wanted)] == wanted
    # the JPEG floor: the frames picked from the store's own count and fps, each decoded once, in order
    store = make_frame_store_storage([path], str(tmp_path / "store"), short_side=0)
    assert store.opts == ("DATA.FORMAT", "frames") and not store.videos and store.frame_store
    seen = []
    images = decode_clip_jpegs(store.paths[0], lambda length, fps: seen.append((length, fps)) or [100, 3, 149, 3])
    assert seen == [(150, 30.0)] and [read_frame_index(i, channels_first=True) for i in images] == [3, 100, 149]


def test_a_pytorchvideo_that_cannot_be_imported_is_named_and_its_row_skipped(tmp_path, monkeypatch):
    make_indexed_dataset(str(tmp_path), [(40, 30.0)], splits=("train",))
    dataset = VideoDataset(dataset_cfg(tmp_path), "train")
    monkeypatch.setitem(sys.modules, "pytorchvideo.data", None)  # the import fails, as a broken install does
    make, why = pytorchvideo_clips(dataset)
    assert make is None and why.startswith("pytorchvideo import failed (ModuleNotFoundError: import of pytorchvideo")
    rows, not_run = rows_for(dataset_cfg(tmp_path), Storage("s", tuple(dataset.paths)), str(tmp_path / "lists"),
                             backends=("pyav",), with_pytorchvideo=True, floor=False)
    assert [row.name for row in rows] == ["ours (pyav)", "PySlowFast's way (our reimplementation)"]
    assert not_run == {"PyTorchVideo LabeledVideoDataset": why}
    result = {"clip": "8x8, crop 224", "clips_end": "uint8", "videos": 1, "clips_per_video": 1, "source_size": "96x64", "timing": "t",
              "not_run": not_run,
              "gop250_bytes_per_video": 1e6, "storages": [{"name": "s", "bytes_per_video": 1e6, "size_vs_gop250": None,
                                                         "rows": [{"name": "ours (pyav)", "cpu_ms": 10.0,
                                                                   "wall_clips_per_s": 50.0, "error": ""}]}]}
    assert f"not run: PyTorchVideo LabeledVideoDataset: {why}" in format_train_table(result).splitlines()
