"""Test coverage report: how many videos were evaluated and which failed.

The engine collects the ``"failed"`` entries of all test batches (over all
ranks), then calls ``write_coverage_report`` once on the main process; it
writes ``failed_videos.txt`` and returns the line to log, e.g.
"4,776 / 4,784 videos evaluated, 8 failed (failed_videos.txt)".
"""

from __future__ import annotations

import os
from typing import Iterable

FAILED_VIDEOS_FILE = "failed_videos.txt"


def coverage_line(num_videos: int, num_failed: int, failed_file: str = FAILED_VIDEOS_FILE) -> str:
    """The one-line summary of a test run's coverage."""
    line = f"{num_videos - num_failed:,} / {num_videos:,} videos evaluated, {num_failed:,} failed"
    return f"{line} ({failed_file})" if num_failed else line


def write_coverage_report(num_videos: int, failed: Iterable[tuple[int, str, str]], output_dir: str) -> str:
    """Write ``output_dir/failed_videos.txt`` (index, path, reason; tab separated) and return the line.

    ``failed`` may hold the same video twice (padded samplers); it is counted once.
    The file is written even when nothing failed, so its absence never means "unknown".
    """
    unique = {int(index): (path, reason) for index, path, reason in failed}
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, FAILED_VIDEOS_FILE), "w", encoding="utf-8") as handle:
        for index in sorted(unique):
            path, reason = unique[index]
            handle.write(f"{index}\t{path}\t{reason}\n")
    return coverage_line(num_videos, len(unique))
