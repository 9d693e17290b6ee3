"""per_class.csv and the most confused pairs of a test equal a hand computation from
predictions.npz; the confusion figure at 400 classes shows the most confused 40."""

import csv
import json
import os
import time
from collections import Counter

import numpy as np
import pytest

from video_gc.engine.meters import confusion_matrix
from video_gc.engine.plots import MAX_CONFUSION_CLASSES, confusion_classes, plot_confusion_matrix
from video_gc.engine.report import PER_CLASS_COLUMNS, most_confused_pairs, per_class_csv, per_class_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, "configs", "demo", "SLOW_GC_DEMO.yaml")  # 8 classes


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory):
    """One epoch of training then the test, on 8 synthetic classes with 2 test videos each (so top-5 is
    not every class); the model is a width-2 Slow R50 on 4 x 32 x 32 clips."""
    from video_gc.engine.launch import main as run_net
    from video_gc.prep.synthetic import make_synthetic_dataset

    data = str(tmp_path_factory.mktemp("eight_classes"))
    make_synthetic_dataset(data, num_classes=8, videos_per_class=4, num_frames=16, size=(32, 32), val_fraction=1 / 4,
                           test_fraction=1 / 2, verbose=False)
    out = tmp_path_factory.mktemp("tested")
    opts = ["DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", str(out), "RESNET.WIDTH_PER_GROUP", "2",
            "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 36]",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4",
            "TEST.BATCH_SIZE", "4", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
            "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.EVAL_PERIOD", "10", "SOLVER.MAX_EPOCH", "1"]
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 0
    with open(os.path.join(data, "classids.json")) as f:
        classids = json.load(f)
    return out, sorted(classids, key=classids.get)


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == PER_CLASS_COLUMNS
    return rows[1:]


def _share(numerator, denominator):
    return None if denominator == 0 else numerator / denominator


def _hand_report(scores, labels):
    """Per-class counts with plain loops: (support, predicted, correct, in top 5) per class."""
    num_classes = len(scores[0])
    support, predicted, correct, top5 = ([0] * num_classes for _ in range(4))
    for row, label in zip(scores, labels):
        best = 0
        for c in range(num_classes):
            if row[c] > row[best]:
                best = c
        higher = sum(1 for c in range(num_classes) if row[c] > row[label])
        support[label] += 1
        predicted[best] += 1
        correct[label] += best == label
        top5[label] += higher < min(5, num_classes)
    return support, predicted, correct, top5


def _assert_cell(text, expected):
    if expected is None:
        assert text == ""
    else:
        assert float(text) == pytest.approx(expected, abs=5e-7)


@pytest.mark.slow
def test_per_class_csv_of_a_real_test_equals_a_hand_computation(tested_run):
    out, names = tested_run
    preds = np.load(out / "predictions.npz")
    scores, labels = preds["scores"].tolist(), preds["label"].tolist()
    assert len(labels) == 16 and sorted(Counter(labels).values()) == [2] * 8
    # The hand rule for top-5 (fewer than 5 classes score higher) needs no ties at the true class's score.
    assert all(sum(1 for s in row if s == row[label]) == 1 for row, label in zip(scores, labels))
    support, predicted, correct, top5 = _hand_report(scores, labels)
    rows = _read_csv(out / "per_class.csv")
    assert len(rows) == 8
    for c, row in enumerate(rows):
        assert row[:4] == [str(c), names[c], str(support[c]), str(predicted[c])]
        _assert_cell(row[4], _share(correct[c], predicted[c]))
        _assert_cell(row[5], _share(correct[c], support[c]))
        _assert_cell(row[6], _share(2 * correct[c], support[c] + predicted[c]))
        _assert_cell(row[7], _share(top5[c], support[c]))
    # The same scores as the metrics: per-class hits add up to the video top-1 / top-5 counts.
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert 100.0 * sum(correct) / 16 == pytest.approx(metrics["top1"])
    assert 100.0 * sum(top5) / 16 == pytest.approx(metrics["top5"])
    assert 0 < sum(top5) < 16, "top-5 recall of this run should tell classes apart"

    # The most confused pairs in the metrics: a Counter over the off-diagonal (true, predicted) pairs.
    pairs = Counter((label, int(np.argmax(row))) for row, label in zip(scores, labels) if np.argmax(row) != label)
    expected = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert expected, "an untrained model confuses some classes"
    assert [(p["true"], p["predicted"], p["count"]) for p in metrics["most_confused"]] == \
        [(t, p, n) for (t, p), n in expected]
    for p in metrics["most_confused"]:
        assert p["true_name"] == names[p["true"]] and p["predicted_name"] == names[p["predicted"]]
        assert p["share"] == pytest.approx(p["count"] / support[p["true"]])
    log = (out / "log.txt").read_text()
    first = metrics["most_confused"][0]
    assert "most confused pairs (true -> predicted):" in log
    assert f"{first['true_name']} ({first['true']}) -> {first['predicted_name']} ({first['predicted']}): " in log


def test_three_classes_with_one_never_predicted():
    # Class 2 has two videos and is never predicted; its precision is undefined (empty), its F1 is 0.
    labels = [0, 0, 0, 1, 1, 2, 2]
    predicted = [0, 0, 1, 1, 0, 0, 1]
    scores = np.eye(3, dtype=np.float32)[predicted] + 0.1
    rows = per_class_report(scores, np.array(labels), ["run", "jump", "swim"])
    expected = [  # class, support, predicted, precision, recall, F1 = 2PR / (P + R)
        (0, 3, 4, 2 / 4, 2 / 3, 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)),
        (1, 2, 3, 1 / 3, 1 / 2, 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)),
        (2, 2, 0, None, 0.0, 0.0),
    ]
    for row, (c, n, p, precision, recall, f1) in zip(rows, expected):
        assert (row["class_id"], row["support"], row["predicted"]) == (c, n, p)
        assert row["precision"] == (None if precision is None else pytest.approx(precision))
        assert row["recall"] == pytest.approx(recall) and row["f1"] == pytest.approx(f1)
        assert row["top5_recall"] == 1.0  # 3 classes: every label is in the top 5
    assert per_class_csv(rows).splitlines() == [
        "class_id,class_name,support,predicted,precision,recall,f1,top5_recall",
        "0,run,3,4,0.500000,0.666667,0.571429,1.000000",
        "1,jump,2,3,0.333333,0.500000,0.400000,1.000000",
        "2,swim,2,0,,0.000000,0.000000,1.000000",
    ]
    pairs = most_confused_pairs(confusion_matrix(labels, predicted, 3), ["run", "jump", "swim"])
    counted = Counter((t, p) for t, p in zip(labels, predicted) if t != p)
    assert [((p["true"], p["predicted"]), p["count"]) for p in pairs] == sorted(counted.items())  # all count 1
    assert [p["share"] for p in pairs] == pytest.approx([1 / 3, 1 / 2, 1 / 2, 1 / 2])


def test_a_class_without_videos_has_empty_recall_and_top5():
    rows = per_class_report(np.array([[0.9, 0.1, 0.0]]), np.array([0]), ["a", "b", "c"])
    assert [(r["support"], r["recall"], r["top5_recall"], r["f1"]) for r in rows[1:]] == [(0, None, None, None)] * 2
    # No video evaluated (every one failed to decode): a row per class, all shares empty.
    empty = per_class_report(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64), ["a", "b"])
    assert [(r["support"], r["predicted"], r["precision"], r["f1"]) for r in empty] == [(0, 0, None, None)] * 2
    with pytest.raises(ValueError, match="do not fit 4 classes"):
        per_class_report(np.zeros((1, 3)), np.array([0]), ["a", "b", "c", "d"])


def test_confusion_figure_at_400_classes_shows_the_40_most_confused(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    labels = np.repeat(np.arange(n), 5)
    predicted = np.where(rng.random(len(labels)) < 0.7, labels, rng.integers(0, n, len(labels)))
    matrix = confusion_matrix(labels, predicted, n)
    shown = confusion_classes(matrix)
    assert len(shown) == MAX_CONFUSION_CLASSES == 40
    # Off-diagonal mass by loops: videos of the class predicted as another plus others predicted as it.
    mass = [0] * n
    for t, p in zip(labels.tolist(), predicted.tolist()):
        if t != p:
            mass[t] += 1
            mass[p] += 1
    assert shown.tolist() == sorted(range(n), key=lambda c: (-mass[c], c))[:40]
    assert confusion_classes(matrix[:12, :12]).tolist() == list(range(12))  # a small matrix: every class

    names = [f"class {c}" for c in range(n)]
    start = time.perf_counter()
    path = plot_confusion_matrix(matrix, names, str(tmp_path / "confusion_400.png"))
    assert time.perf_counter() - start < 30
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
