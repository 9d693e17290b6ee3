"""Mini-Kinetics-200 (Xie et al. 2018) as lists over an already prepared Kinetics-400 folder.

No video is re-encoded: the lists point at the Kinetics clips (paths relative to
the Mini-Kinetics folder). Labels are 0..199 in the order of the class list.
Accepted line formats:

- class list: one Kinetics label per line, as in Kinetics' annotations (quotes
  around it are dropped); blank lines and ``#`` comments are skipped;
- id lists: one clip per line, written as a YouTube id (``abc123DEF-_``), a clip
  name (``abc123DEF-_000010_000020``), or a file name or path of either (folders
  and extensions are dropped); anything after the first space, tab or comma
  (e.g. a label) is ignored.

Mini-Kinetics has no test split: ``test.csv`` is a copy of ``val.csv``.
"""

from __future__ import annotations

import os
import re

from video_gc.data.lists import VIDEO_EXTENSIONS, read_classids, read_list, read_text_lines, write_classids, write_list
from video_gc.prep.kinetics import CLIP_NAME, split_table
from video_gc.prep.lists import PrepError, write_report


def read_class_list(path: str, known: list[str]) -> list[str]:
    names = []
    known_set = set(known)
    for number, line in read_text_lines(path):
        label = line.strip().strip('"').strip()
        if label not in known_set:
            raise PrepError(f"{path}:{number}: label {label!r} is not a class of the Kinetics folder's classids.json")
        if label in names:
            raise PrepError(f"{path}:{number}: label {label!r} appears twice")
        names.append(label)
    if not names:
        raise PrepError(f"{path}: no classes")
    return names


def youtube_id(token: str) -> str:
    """The YouTube id of a line of an id list (see the module docstring)."""
    stem = os.path.basename(token.replace("\\", "/"))
    while os.path.splitext(stem)[1].lower() in VIDEO_EXTENSIONS:
        stem = os.path.splitext(stem)[0]
    match = CLIP_NAME.match(stem)
    return match.group("id") if match else stem


def read_id_list(path: str) -> list[tuple[str, str]]:
    """(youtube id, "file:line") for every line, in order."""
    ids = []
    for number, line in read_text_lines(path):
        token = re.split(r"[\s,]+", line, maxsplit=1)[0]
        ids.append((youtube_id(token), f"{path}:{number}"))
    if not ids:
        raise PrepError(f"{path}: no ids")
    return ids


def kinetics_clips(kinetics_dir: str) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Kinetics labels and youtube id -> (absolute clip path, label) from a prepared Kinetics folder."""
    labels = read_classids(os.path.join(kinetics_dir, "classids.json"))
    clips: dict[str, tuple[str, str]] = {}
    lists = [os.path.join(kinetics_dir, f"{s}.csv") for s in ("train", "val", "test")]
    if not any(os.path.isfile(p) for p in lists):
        raise PrepError(f"no train.csv / val.csv in {kinetics_dir}: run data_prep/kinetics.py first")
    for list_path in lists:
        if not os.path.isfile(list_path):
            continue
        for rel, label in read_list(list_path, allow_empty=True):  # an empty split adds no clips
            stem = os.path.splitext(os.path.basename(rel))[0]
            match = CLIP_NAME.match(stem)
            clips.setdefault(match.group("id") if match else stem,
                             (os.path.abspath(os.path.join(kinetics_dir, rel)), labels[label]))
    return labels, clips


def prepare_mini_kinetics(classes: str, train_ids: str, val_ids: str, kinetics_dir: str, output: str,
                          verbose: bool = True) -> dict:
    """Write ``output/{train,val,test}.csv``, ``classids.json`` and ``report.csv``; returns the summary."""
    kinetics_labels, clips = kinetics_clips(kinetics_dir)
    names = read_class_list(classes, kinetics_labels)
    index = {label: i for i, label in enumerate(names)}
    os.makedirs(output, exist_ok=True)
    out_abs = os.path.abspath(output)
    per_split, report_rows, lists = {}, [], {}
    for split, ids_path in (("train", train_ids), ("val", val_ids)):
        entries, counts = [], {"annotated": 0, "listed": 0, "missing": 0, "failed": 0}
        for yid, where in read_id_list(ids_path):
            counts["annotated"] += 1
            clip = clips.get(yid)
            if clip is None:
                counts["missing"] += 1
                report_rows.append({"split": split, "item": yid, "source": where, "status": "missing",
                                    "reason": f"not in the lists of {kinetics_dir} (not downloaded or failed)"})
            elif clip[1] not in index:
                counts["failed"] += 1
                report_rows.append({"split": split, "item": yid, "source": where, "status": "failed",
                                    "reason": f"its Kinetics label {clip[1]!r} is not in {classes}"})
            else:
                counts["listed"] += 1
                entries.append((os.path.relpath(clip[0], out_abs).replace(os.sep, "/"), index[clip[1]]))
        lists[split] = entries
        per_split[split] = counts
    previous = {}
    for split in ("train", "val", "test"):
        path = os.path.join(output, f"{split}.csv")
        previous[split] = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
    for split, entries in (("train", lists["train"]), ("val", lists["val"]), ("test", lists["val"])):
        write_list(os.path.join(output, f"{split}.csv"), entries)
    unchanged = all(previous[s] == open(os.path.join(output, f"{s}.csv"), encoding="utf-8").read()
                    for s in ("train", "val", "test"))
    write_classids(os.path.join(output, "classids.json"), names)
    report = os.path.join(output, "report.csv")
    write_report(report, report_rows)
    summary = {"output": output, "classes": len(names), "splits": per_split, "unchanged": unchanged,
               "report": report}
    if verbose:
        head = "nothing to do: the lists were already up to date" if unchanged else "lists written"
        print(f"Mini-Kinetics in {output}: {len(names)} classes; {head} (no video re-encoded)")
        print(split_table(per_split, report))
        print("  test.csv = val.csv (Mini-Kinetics has no test split)")
    return summary
