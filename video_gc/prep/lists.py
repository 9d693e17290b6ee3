"""Shared pieces of the preparation scripts: errors, safe names and report files.

The data lists, ``classids.json`` and the video extensions belong to :mod:`video_gc.data.lists`.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Iterable, Sequence


class PrepError(RuntimeError):
    """Bad input to a preparation step; the message names the file (and line or column)."""


def safe_name(text: str) -> str:
    """A file or folder name with no spaces or shell-hostile characters.

    Kinetics labels such as ``passing American football (in game)`` become folder
    names, and list lines are split on spaces, so anything outside ``[A-Za-z0-9_.-]``
    turns into one underscore.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    if not name:
        raise PrepError(f"cannot make a file name out of {text!r}")
    return name


def folder_names(labels: Sequence[str]) -> dict[str, str]:
    """Map each label to its folder name; two labels with the same folder name are an error."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for label in labels:
        name = safe_name(label)
        if name in seen and seen[name] != label:
            raise PrepError(f"labels {seen[name]!r} and {label!r} both map to the folder name {name!r}")
        seen[name] = label
        out[label] = name
    return out


REPORT_COLUMNS = ("split", "item", "source", "status", "reason")


def write_report(path: str, rows: Iterable[dict]) -> int:
    """Write the CSV of left-out videos (columns ``split,item,source,status,reason``)."""
    rows = list(rows)
    tmp = f"{path}.partial"
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return len(rows)
