"""Kinetics-400: official annotation CSVs + downloaded videos -> resized clips and lists.

Output layout (``DATA.PATH_TO_DATA_DIR: DIR``):

- ``DIR/videos/<label_folder>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (labels with
  spaces or punctuation become ``safe_name`` folders; ``videos/_unlabeled/`` holds
  test clips whose annotation has no label);
- ``DIR/{train,val,test}.csv`` for the labelled splits present, lines
  ``videos/<folder>/<clip>.mp4 <index>``;
- ``DIR/test_unlabeled.txt`` (paths only) when the test annotations carry no labels;
- ``DIR/classids.json``: label -> index in alphabetical order of the label strings
  (the standard Kinetics-400 indices), with the original label text;
- ``DIR/report.csv``: every annotated clip left out of the lists, with the reason.
"""

from __future__ import annotations

import csv
import os
import re
import time
from dataclasses import dataclass

from video_gc.data.lists import find_videos, read_classids, write_classids, write_list
from video_gc.prep.lists import PrepError, folder_names, write_report
from video_gc.prep.resize import (DEFAULT_BFRAMES, DEFAULT_CRF, DEFAULT_GOP, DEFAULT_SHORT_SIDE, DEFAULT_TUNE,
                                  ResizeJob, count_status, describe_counts, run_jobs)
from video_gc.utils.io import atomic_write_text

REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validate": "val", "validation": "val",
               "test": "test", "testing": "test"}
UNLABELED_FOLDER = "_unlabeled"
# `{youtube_id}_{start:06d}_{end:06d}` (YouTube ids are 11 characters, but any id works here).
CLIP_NAME = re.compile(r"^(?P<id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")


@dataclass(frozen=True)
class Annotation:
    youtube_id: str
    start: float
    end: float
    label: str | None
    split: str
    where: str  # "file:line", for messages

    @property
    def clip_name(self) -> str:
        return f"{self.youtube_id}_{int(round(self.start)):06d}_{int(round(self.end)):06d}"


def _split_from_filename(path: str) -> str | None:
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    for word in re.split(r"[^a-z]+", stem):
        if word in SPLIT_NAMES:
            return SPLIT_NAMES[word]
    return None


def read_annotations(path: str) -> list[Annotation]:
    """Parse one official CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    The csv module handles quoted labels with commas, quotes, parentheses and
    apostrophes. The split comes from the ``split`` column, else from the file name
    (``train``, ``validate``/``val``, ``test``). A test file may have no ``label``
    column; any other missing column is an error naming the file.
    """
    if not os.path.isfile(path):
        raise PrepError(f"annotation file not found: {path}")
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PrepError(f"{path}:1: missing column(s) {', '.join(missing)} in the header {header} "
                            f"(expected label,youtube_id,time_start,time_end,split)")
        file_split = _split_from_filename(path)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise PrepError(f"{where}: more fields than the header has columns")
            if not any((v or "").strip() for v in row.values()):
                continue
            split_text = (row.get("split") or "").strip().lower()
            split = SPLIT_NAMES.get(split_text) if split_text else file_split
            if split is None:
                raise PrepError(f"{where}: column 'split' is {split_text!r}; expected train, val/validate or test"
                                if split_text else f"{where}: no 'split' column and the file name does not say "
                                "train / val / test")
            times = []
            for column in ("time_start", "time_end"):
                try:
                    times.append(float(row[column]))
                except (TypeError, ValueError):
                    raise PrepError(f"{where}: column {column!r} is {row[column]!r}, not a number") from None
            youtube_id = (row["youtube_id"] or "").strip()
            if not youtube_id:
                raise PrepError(f"{where}: column 'youtube_id' is empty")
            if times[1] <= times[0]:
                raise PrepError(f"{where}: time_end {times[1]:g} is not after time_start {times[0]:g}")
            label = (row.get("label") or "").strip() or None
            if label is None and split != "test":
                raise PrepError(f"{where}: column 'label' is empty in a {split} annotation"
                                if "label" in header else f"{path}:1: missing column 'label' for {split} annotations")
            rows.append(Annotation(youtube_id, times[0], times[1], label, split, where))
    return rows


def index_videos(root: str) -> dict[str, str]:
    """Map file stems (YouTube ids or trimmed clip names) to paths; the first one (sorted) wins."""
    found: dict[str, str] = {}
    for path in find_videos(root):
        found.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return found


def _source_for(ann: Annotation, videos: dict[str, str]) -> tuple[str | None, bool]:
    """(path, needs trimming): a trimmed clip wins over the untrimmed download."""
    if ann.clip_name in videos:
        return videos[ann.clip_name], False
    if ann.youtube_id in videos:
        return videos[ann.youtube_id], True
    return None, False


def prepare_kinetics(annotations: list[str], videos_dir: str, output: str,
                     short_side: int = DEFAULT_SHORT_SIDE, workers: int = 1, classids: str | None = None,
                     backend: str = "auto", gop: int = DEFAULT_GOP, tune: str = DEFAULT_TUNE, crf: int = DEFAULT_CRF,
                     bframes: int | None = DEFAULT_BFRAMES, verbose: bool = True) -> dict:
    """Resize every annotated clip that was downloaded and write the lists; returns the summary.

    ``classids``: an existing classids.json to take the class indices from (e.g. to
    prepare only ``validate.csv`` with the full 400-class indices); by default the
    labels of all given annotation files, sorted alphabetically.
    """
    rows: list[Annotation] = []
    for path in annotations:
        rows.extend(read_annotations(path))
    if not rows:
        raise PrepError(f"no annotations in {', '.join(annotations)}")
    seen: dict[tuple[str, str], str] = {}
    for ann in rows:
        key = (ann.split, ann.clip_name)
        if key in seen:
            raise PrepError(f"{ann.where}: clip {ann.clip_name} is annotated twice in {ann.split} "
                            f"(first at {seen[key]})")
        seen[key] = ann.where
    labels = sorted({ann.label for ann in rows if ann.label is not None})
    if classids:
        known = read_classids(classids)
        unknown = [ann for ann in rows if ann.label is not None and ann.label not in known]
        if unknown:
            raise PrepError(f"{unknown[0].where}: label {unknown[0].label!r} is not in {classids}")
        labels = known
    if not labels:
        raise PrepError(f"no labelled annotations in {', '.join(annotations)}")
    index = {label: i for i, label in enumerate(labels)}
    folders = folder_names(labels)
    videos = index_videos(videos_dir)

    jobs: dict[str, ResizeJob] = {}  # by output: a clip annotated in two splits is resized once
    job_rows, outcome = [], {}
    for ann in rows:
        source, trim = _source_for(ann, videos)
        folder = folders[ann.label] if ann.label is not None else UNLABELED_FOLDER
        rel = f"videos/{folder}/{ann.clip_name}.mp4"
        if source is None:
            outcome[ann] = ("missing", rel, "", f"no file named {ann.clip_name}.* or {ann.youtube_id}.* "
                            f"under {videos_dir}")
            continue
        jobs.setdefault(rel, ResizeJob(source, os.path.join(output, rel), short_side, start=ann.start if trim else None,
                                       end=ann.end if trim else None, backend=backend, gop=gop, tune=tune, crf=crf,
                                       bframes=bframes))
        job_rows.append((ann, rel))
    start_time = time.time()
    results = dict(zip(jobs, run_jobs(list(jobs.values()), workers=workers, desc="kinetics"))) if jobs else {}
    for ann, rel in job_rows:
        result = results[rel]
        outcome[ann] = (result.status, rel, result.job.source, result.reason)

    splits = sorted({ann.split for ann in rows}, key=["train", "val", "test"].index)
    per_split, report_rows, unlabeled = {}, [], []
    for split in splits:
        entries, counts = [], {"annotated": 0, "listed": 0, "missing": 0, "failed": 0}
        for ann in (a for a in rows if a.split == split):
            status, rel, source, reason = outcome[ann]
            counts["annotated"] += 1
            if status in ("written", "skipped"):
                counts["listed"] += 1
                if ann.label is None:
                    unlabeled.append(rel)
                else:
                    entries.append((rel, index[ann.label]))
            else:
                counts[status] += 1
                report_rows.append({"split": split, "item": rel, "source": source, "status": status,
                                    "reason": reason})
        if entries:
            write_list(os.path.join(output, f"{split}.csv"), entries)
        per_split[split] = counts
    if unlabeled:
        atomic_write_text(os.path.join(output, "test_unlabeled.txt"), "".join(f"{p}\n" for p in unlabeled))
    write_classids(os.path.join(output, "classids.json"), labels)
    report = os.path.join(output, "report.csv")
    write_report(report, report_rows)

    videos_counts = count_status(list(results.values()))
    videos_counts["missing"] += sum(1 for o in outcome.values() if o[0] == "missing")
    summary = {"output": output, "classes": len(labels), "gop": gop, "splits": per_split, "videos": videos_counts,
               "unlabeled_test": len(unlabeled), "report": report, "seconds": round(time.time() - start_time, 2)}
    if verbose:
        print(format_summary("Kinetics", summary))
        if unlabeled:
            print(f"  test annotations have no labels: {len(unlabeled)} clips listed in "
                  f"{os.path.join(output, 'test_unlabeled.txt')} (no test.csv)")
    return summary


def split_table(splits: dict[str, dict[str, int]], report: str) -> str:
    """Annotated / listed / missing / failed counts per split, and where the reasons are."""
    lines = [f"  {'split':<8}{'annotated':>10}{'listed':>8}{'missing':>9}{'failed':>8}"]
    for split, c in splits.items():
        lines.append(f"  {split:<8}{c['annotated']:>10}{c['listed']:>8}{c['missing']:>9}{c['failed']:>8}")
    lines.append(f"  left-out videos and reasons: {report}")
    return "\n".join(lines)


def format_summary(name: str, summary: dict) -> str:
    """The summary printed at the end of a preparation that resized videos."""
    return (f"{name} in {summary['output']}: {summary['classes']} classes; videos (gop {summary['gop']}): "
            f"{describe_counts(summary['videos'])} ({summary['seconds']} s)\n"
            + split_table(summary["splits"], summary["report"]))
