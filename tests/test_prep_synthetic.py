"""The synthetic dataset generator: layout, exact lists, determinism, the temporal-order pairs."""

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from video_gc.data.lists import read_classids, read_list
from video_gc.prep.lists import PrepError
from video_gc.prep.synthetic import class_names, make_synthetic_dataset, render_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_classes=4, videos_per_class=5, num_frames=12, size=(64, 48), val_fraction=0.2,
             test_fraction=0.2, verbose=False)


def decode(path):
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("syn"))
    return folder, make_synthetic_dataset(folder, seed=3, **SMALL)


def test_layout_and_exact_lists(dataset):
    folder, summary = dataset
    assert summary["videos"] == 20 and summary["written"] == 20
    assert (summary["train"], summary["val"], summary["test"]) == (12, 4, 4)
    names = read_classids(os.path.join(folder, "classids.json"))
    assert names == ["square moving right", "square moving left", "bar rotating clockwise",
                     "bar rotating counter-clockwise"]
    lists = {s: read_list(os.path.join(folder, f"{s}.csv")) for s in ("train", "val", "test")}
    all_entries = sorted(e for entries in lists.values() for e in entries)
    expected = sorted((f"videos/{n.replace(' ', '_')}/{n.replace(' ', '_')}_{i:04d}.mp4", c)
                      for c, n in enumerate(names) for i in range(5))
    assert all_entries == expected  # every video exactly once, with its class
    for split, per_class in (("train", 3), ("val", 1), ("test", 1)):
        labels = [label for _, label in lists[split]]
        assert labels == sorted(labels) and all(labels.count(c) == per_class for c in range(4))
    for rel, _ in all_entries:
        frames = decode(os.path.join(folder, rel))
        assert frames.shape == (12, 48, 64, 3)


def test_same_seed_same_lists_and_frames(dataset, tmp_path):
    folder, _ = dataset
    again = str(tmp_path / "again")
    make_synthetic_dataset(again, seed=3, **SMALL)
    for name in ("train.csv", "val.csv", "test.csv", "classids.json"):
        with open(os.path.join(folder, name)) as a, open(os.path.join(again, name)) as b:
            assert a.read() == b.read()
    for rel, _ in read_list(os.path.join(folder, "val.csv")):
        np.testing.assert_array_equal(decode(os.path.join(folder, rel)), decode(os.path.join(again, rel)))
    for split in ("train", "val", "test"):  # byte-identical files, not only equal pixels
        for rel, _ in read_list(os.path.join(folder, f"{split}.csv")):
            with open(os.path.join(folder, rel), "rb") as a, open(os.path.join(again, rel), "rb") as b:
                assert a.read() == b.read(), rel
    other = str(tmp_path / "other")
    make_synthetic_dataset(other, seed=4, **SMALL)
    rel = read_list(os.path.join(folder, "train.csv"))[0][0]
    assert not np.array_equal(decode(os.path.join(folder, rel)), decode(os.path.join(other, rel)))


def test_odd_class_is_even_class_reversed_in_time():
    for pair in range(4):
        forward = render_clip(2 * pair, np.random.default_rng(11), num_frames=10, height=48, width=64)
        backward = render_clip(2 * pair + 1, np.random.default_rng(11), num_frames=10, height=48, width=64)
        np.testing.assert_array_equal(backward, forward[::-1])
        # the clip really moves: its first and last frames differ (otherwise reversal proves nothing)
        assert np.abs(forward[0].astype(int) - forward[-1].astype(int)).mean() > 2
    # the same seed with another pair gives another shape/motion, not a copy
    assert not np.array_equal(render_clip(0, np.random.default_rng(11), 10, 48, 64),
                              render_clip(2, np.random.default_rng(11), 10, 48, 64))
    names = class_names(8)
    assert names[0].split()[0] == names[1].split()[0] and names[0] != names[1]


def test_rerun_is_idempotent_and_other_options_refused(dataset, capsys):
    folder, _ = dataset
    before = {n: os.path.getmtime(os.path.join(folder, "videos", d, n))
              for d in os.listdir(os.path.join(folder, "videos"))
              for n in os.listdir(os.path.join(folder, "videos", d))}
    summary = make_synthetic_dataset(folder, seed=3, **{**SMALL, "verbose": True})
    assert summary["written"] == 0 and summary["skipped"] == 20
    assert "nothing to do" in capsys.readouterr().out
    after = {n: os.path.getmtime(os.path.join(folder, "videos", d, n))
             for d in os.listdir(os.path.join(folder, "videos"))
             for n in os.listdir(os.path.join(folder, "videos", d))}
    assert after == before
    with pytest.raises(PrepError, match="other options"):
        make_synthetic_dataset(folder, seed=5, **SMALL)


def test_data_pipeline_reads_the_output(dataset):
    from video_gc.config import get_cfg
    from video_gc.data import build_dataset

    folder, _ = dataset
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = folder, 4
    ds = build_dataset(cfg, "val")
    assert len(ds) == 4 and list(ds.labels) == [0, 1, 2, 3]
    assert all(os.path.isfile(p) for p in ds.paths)


def test_script_help_and_run(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "make_synthetic.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "--videos-per-class" in out
    run = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "make_synthetic.py"), "--output",
                          str(tmp_path / "s"), "--num-classes", "2", "--videos-per-class", "2", "--num-frames", "4",
                          "--width", "32", "--height", "32", "--workers", "1", "--val-fraction", "0",
                          "--test-fraction", "0.5"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2 classes, 4 videos" in run.stdout
    assert json.load(open(tmp_path / "s" / "classids.json")) == {"square moving right": 0, "square moving left": 1}
    bad = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "make_synthetic.py"), "--output",
                          str(tmp_path / "b"), "--num-classes", "99"], capture_output=True, text=True)
    assert bad.returncode == 1 and "num_classes must be in 1..38" in bad.stderr and "Traceback" not in bad.stderr
