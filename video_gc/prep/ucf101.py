"""UCF-101: ``UCF-101/<Class>/*.avi`` + ``ucfTrainTestlist/`` -> resized videos and per-split lists.

Output layout:

- ``DIR/videos/<Class>/<name>.mp4`` (each video once, shared by the three splits);
- ``DIR/classids.json``: class -> 0-based index (``classInd.txt`` is 1-based);
- ``DIR/split{1,2,3}/{train,val,test}.csv`` with lines ``../videos/<Class>/<name>.mp4 <index>``
  (paths relative to the split folder; ``val.csv`` = ``test.csv`` = the official
  test list, since UCF-101 has no separate validation set) and a copy of
  ``classids.json``, since runs read ``DATA.CLASS_NAMES_FILE`` in the data folder. Point
  ``DATA.PATH_TO_DATA_DIR`` at one split folder;
- ``DIR/report.csv``: listed videos that are missing or failed, with the reason.
"""

from __future__ import annotations

import os
import time

from video_gc.prep.kinetics import format_summary
from video_gc.data.lists import find_videos, read_text_lines, write_classids, write_list
from video_gc.prep.lists import PrepError, write_report
from video_gc.prep.resize import (DEFAULT_BFRAMES, DEFAULT_CRF, DEFAULT_GOP, DEFAULT_SHORT_SIDE, DEFAULT_TUNE,
                                  ResizeJob, count_status, run_jobs)

SPLITS = (1, 2, 3)


def read_class_index(path: str) -> list[str]:
    """``classInd.txt`` (lines ``1 ApplyEyeMakeup``, indices 1..N in order) -> class names by 0-based index."""
    names = []
    for number, line in read_text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise PrepError(f"{path}:{number}: expected '<index> <ClassName>', got {line!r}")
        if int(parts[0]) != len(names) + 1:
            raise PrepError(f"{path}:{number}: index {parts[0]} out of order (expected {len(names) + 1}; "
                            "classInd.txt is 1-based and sorted)")
        if parts[1] in names:
            raise PrepError(f"{path}:{number}: class {parts[1]!r} appears twice")
        names.append(parts[1])
    if not names:
        raise PrepError(f"{path}: no classes")
    return names


def read_split_file(path: str, classes: dict[str, int], labelled: bool) -> list[tuple[str, int]]:
    """A train list (``Class/v_x.avi 1``, 1-based label) or a test list (``Class/v_x.avi``).

    The label is the class folder's index; a train list's own label must agree with it.
    """
    entries = []
    for number, line in read_text_lines(path):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else ""
        if folder not in classes:
            raise PrepError(f"{path}:{number}: class folder {folder!r} of {rel!r} is not in classInd.txt"
                            if folder else f"{path}:{number}: expected 'Class/video.avi', got {rel!r}")
        if len(parts) > 2 or (labelled and len(parts) != 2):
            form = "Class/video.avi <label>" if labelled else "Class/video.avi"
            raise PrepError(f"{path}:{number}: expected '{form}', got {line!r}")
        if len(parts) == 2:
            if not parts[1].isdigit():
                raise PrepError(f"{path}:{number}: label {parts[1]!r} is not an integer")
            if int(parts[1]) - 1 != classes[folder]:
                raise PrepError(f"{path}:{number}: label {parts[1]} does not match class {folder!r} "
                                f"(classInd.txt says {classes[folder] + 1})")
        entries.append((rel, classes[folder]))
    if not entries:
        raise PrepError(f"{path}: empty split file")
    return entries


def prepare_ucf101(root: str, splits_dir: str, output: str, short_side: int = DEFAULT_SHORT_SIDE,
                   workers: int = 1, backend: str = "auto", gop: int = DEFAULT_GOP, tune: str = DEFAULT_TUNE,
                   crf: int = DEFAULT_CRF, bframes: int | None = DEFAULT_BFRAMES, verbose: bool = True) -> dict:
    """Resize every video named by the split files and write the three splits' lists."""
    names = read_class_index(os.path.join(splits_dir, "classInd.txt"))
    classes = {name: i for i, name in enumerate(names)}
    find_videos(root)  # an empty or wrong UCF-101 folder fails here, naming it
    split_entries = {}
    for k in SPLITS:
        train_path = os.path.join(splits_dir, f"trainlist0{k}.txt")
        test_path = os.path.join(splits_dir, f"testlist0{k}.txt")
        if not os.path.isfile(train_path) and not os.path.isfile(test_path):
            continue
        split_entries[k] = {"train": read_split_file(train_path, classes, labelled=True),
                            "test": read_split_file(test_path, classes, labelled=False)}
    if not split_entries:
        raise PrepError(f"no trainlist0{{1,2,3}}.txt / testlist0{{1,2,3}}.txt in {splits_dir}")

    videos = sorted({rel for lists in split_entries.values() for entries in lists.values() for rel, _ in entries})
    outputs = {rel: f"videos/{os.path.splitext(rel)[0]}.mp4" for rel in videos}
    jobs = [ResizeJob(os.path.join(root, rel), os.path.join(output, outputs[rel]), short_side, backend=backend,
                      gop=gop, tune=tune, crf=crf,
                      bframes=bframes) for rel in videos]
    start_time = time.time()
    results = dict(zip(videos, run_jobs(jobs, workers=workers, desc="ucf101")))

    per_split, report_rows = {}, {}
    for k, lists in split_entries.items():
        folder = os.path.join(output, f"split{k}")
        for part, entries in lists.items():
            kept = [(f"../{outputs[rel]}", label) for rel, label in entries
                    if results[rel].status in ("written", "skipped")]
            names_out = ("train",) if part == "train" else ("val", "test")
            for name in names_out:
                write_list(os.path.join(folder, f"{name}.csv"), kept)
            per_split[f"{k}/{part}"] = {"annotated": len(entries), "listed": len(kept),
                                        "missing": sum(results[r].status == "missing" for r, _ in entries),
                                        "failed": sum(results[r].status == "failed" for r, _ in entries)}
        write_classids(os.path.join(folder, "classids.json"), names)
    for rel, result in results.items():
        if result.status in ("missing", "failed"):
            report_rows[rel] = {"split": "", "item": outputs[rel], "source": result.job.source,
                                "status": result.status, "reason": result.reason}
    write_classids(os.path.join(output, "classids.json"), names)
    report = os.path.join(output, "report.csv")
    write_report(report, report_rows.values())
    summary = {"output": output, "classes": len(names), "gop": gop, "splits": per_split,
               "videos": count_status(list(results.values())), "report": report,
               "seconds": round(time.time() - start_time, 2)}
    if verbose:
        print(format_summary("UCF-101", summary))
        print(f"  use DATA.PATH_TO_DATA_DIR {os.path.join(output, 'split1')} (or split2, split3)")
    return summary
