"""Shared pieces of the preparation scripts: errors, safe names, list and report files."""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Iterable, Iterator, Sequence

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg")


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


def read_text_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for each non-blank, non-comment line."""
    if not os.path.isfile(path):
        raise PrepError(f"file not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield number, line


def atomic_write_text(path: str, text: str) -> None:
    """Write a text file under a temporary name in the same folder, then rename it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def write_list(path: str, entries: Iterable[tuple[str, int]], separator: str = " ") -> int:
    """Write ``path label`` lines; returns the number of lines."""
    lines = []
    for rel, label in entries:
        if separator in rel:
            raise PrepError(f"{path}: the path {rel!r} contains the separator {separator!r}")
        lines.append(f"{rel}{separator}{label}\n")
    atomic_write_text(path, "".join(lines))
    return len(lines)


def iter_list_entries(path: str, separator: str = " ") -> Iterator[tuple[int, str, str]]:
    """(line number, path as written, label text) of each ``path label`` line; the label
    is what follows the last separator, so paths may contain it. Errors name file and line."""
    for number, line in read_text_lines(path):
        parts = line.rsplit(separator, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise PrepError(f"{path}:{number}: expected 'path{separator}label', got {line!r}")
        yield number, parts[0].strip(), parts[1].strip()


def read_list(path: str, separator: str = " ") -> list[tuple[str, int]]:
    """Read a ``path label`` list with integer labels; errors name the file and line."""
    entries = []
    for number, rel, label in iter_list_entries(path, separator):
        try:
            entries.append((rel, int(label)))
        except ValueError:
            raise PrepError(f"{path}:{number}: the label {label!r} is not an integer") from None
    return entries


def write_classids(path: str, labels: Sequence[str]) -> None:
    """Write ``{"label": index}`` with indices in the order of ``labels``."""
    atomic_write_text(path, json.dumps({label: i for i, label in enumerate(labels)}, indent=1,
                                       ensure_ascii=False) + "\n")


def read_classids(path: str) -> list[str]:
    """Read ``classids.json`` back into the list of labels ordered by index."""
    if not os.path.isfile(path):
        raise PrepError(f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except json.JSONDecodeError as err:
        raise PrepError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise PrepError(f"{path}: expected {{\"label\": index}} with indices 0..N-1")
    return sorted(mapping, key=mapping.get)


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


def find_videos(root: str) -> list[str]:
    """All video files under ``root`` (recursive, sorted); an empty folder is an error."""
    if not os.path.isdir(root):
        raise PrepError(f"video folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(VIDEO_EXTENSIONS) and ".partial." not in name:
                found.append(os.path.join(dirpath, name))
    if not found:
        raise PrepError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    return found
