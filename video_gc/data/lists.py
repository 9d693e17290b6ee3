"""The ``path label`` data lists, ``classids.json`` and the video file extensions.

Everything that reads or writes a data list goes through here: the datasets,
the pre-flight check of run_net, the preparation scripts and the benchmarks.
A list line is ``path<separator>label`` with an integer label; the label is
what follows the LAST separator, so paths may contain the separator (e.g.
spaces). Blank lines and ``#`` comments are skipped. Relative paths resolve
against ``prefix`` when given, else against the folder that holds the list.
Every error is a :class:`DataListError` that names the file (and line).
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, NamedTuple, Sequence

from video_gc.utils.io import atomic_write_text

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg")
# The JPEG frame store's files (DATA.FORMAT frames; video_gc.data.decoder reads them).
FRAME_STORE_EXTENSION = ".frames"


class DataListError(ValueError):
    """A data list (or class-id file, or video folder) that cannot be used; the message names the file and line."""


class ListEntry(NamedTuple):
    """One list line: its 1-based number, the path as written, the path resolved, the label
    (an int, or the text as written when labels are not parsed)."""

    line: int
    written: str
    path: str
    label: int | str


def read_text_lines(path: str, what: str = "file") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for each non-blank, non-comment line."""
    if not os.path.isfile(path):
        raise DataListError(f"{what} not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield number, line


def read_list_entries(list_path: str, *, separator: str = " ", prefix: str = "", num_classes: int | None = None,
                      integer_labels: bool = True, allow_empty: bool = False) -> list[ListEntry]:
    """Every entry of a list. Labels are integers, in [0, num_classes) when that is given;
    ``integer_labels=False`` keeps each label's text as written (a list checked before its
    labels are numbered). An empty list is an error unless ``allow_empty``."""
    root = prefix if prefix else os.path.dirname(os.path.abspath(list_path))
    entries = []
    for number, line in read_text_lines(list_path, "data list"):
        where = f"{list_path}:{number}"
        parts = line.rsplit(separator, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataListError(f"{where}: expected 'path{separator}label', got {line!r} (missing label?)")
        written, label = parts[0].strip(), parts[1].strip()
        if integer_labels:
            try:
                label = int(label)
            except ValueError:
                raise DataListError(f"{where}: label {label!r} is not an integer") from None
            if num_classes is not None and not 0 <= label < num_classes:
                raise DataListError(f"{where}: label {label} is outside [0, {num_classes}) (MODEL.NUM_CLASSES)")
        entries.append(ListEntry(number, written, os.path.join(root, written), label))
    if not entries and not allow_empty:
        raise DataListError(f"data list is empty: {list_path}")
    return entries


def read_video_list(list_path: str, *, separator: str, prefix: str, num_classes: int) -> tuple[list[str], list[int]]:
    """(resolved paths, labels) of the list a config names (``DATA.PATH_TO_DATA_DIR/{split}.csv``)."""
    if not os.path.isfile(list_path):
        raise DataListError(f"data list not found: {list_path} (DATA.PATH_TO_DATA_DIR)")
    entries = read_list_entries(list_path, separator=separator, prefix=prefix, num_classes=num_classes)
    return [e.path for e in entries], [e.label for e in entries]


def read_list(path: str, separator: str = " ", allow_empty: bool = False) -> list[tuple[str, int]]:
    """(path as written, label) of each entry."""
    return [(e.written, e.label) for e in read_list_entries(path, separator=separator, allow_empty=allow_empty)]


def write_list(path: str, entries: Iterable[tuple[str, int]], separator: str = " ") -> int:
    """Write ``path label`` lines; returns the number of lines."""
    lines = []
    for rel, label in entries:
        if separator in rel:
            raise DataListError(f"{path}: the path {rel!r} contains the separator {separator!r}")
        lines.append(f"{rel}{separator}{label}\n")
    atomic_write_text(path, "".join(lines))
    return len(lines)


def write_classids(path: str, labels: Sequence[str]) -> None:
    """Write ``{"label": index}`` with indices in the order of ``labels``."""
    atomic_write_text(path, json.dumps({label: i for i, label in enumerate(labels)}, indent=1,
                                       ensure_ascii=False) + "\n")


def read_classids(path: str) -> list[str]:
    """Read ``classids.json`` back into the list of labels ordered by index."""
    if not os.path.isfile(path):
        raise DataListError(f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except json.JSONDecodeError as err:
        raise DataListError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise DataListError(f"{path}: expected {{\"label\": index}} with indices 0..N-1")
    return sorted(mapping, key=mapping.get)


def find_videos(root: str, frame_stores: bool = False) -> list[str]:
    """All video files under ``root`` (recursive, sorted), or with ``frame_stores`` all frame-store
    files, unfinished ``.partial.`` files left out; a missing or empty folder is an error."""
    extensions = (FRAME_STORE_EXTENSION,) if frame_stores else VIDEO_EXTENSIONS
    if not os.path.isdir(root):
        raise DataListError(f"video folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(extensions) and ".partial." not in name:
                found.append(os.path.join(dirpath, name))
    if not found:
        raise DataListError(f"no video files ({', '.join(extensions)}) under {root}")
    return found
