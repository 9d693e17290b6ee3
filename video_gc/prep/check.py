"""Decode every video of a ``path label`` list, report the bad ones and write a cleaned list.

Frame-store files (``.frames``, data_prep/make_frame_store.py) are checked as stores,
whatever the backend: header, index and file size, then every JPEG frame decoded.

A video is bad when it is missing or unreadable, decodes to zero frames, or has
fewer than ``min_frames`` frames (too short for one clip, e.g. NUM_FRAMES x
SAMPLING_RATE). Paths resolve as in the data pipeline: against ``prefix`` when
given, else against the list's folder.
"""

from __future__ import annotations

import os
import time

import numpy as np

from video_gc.data.decoder import FRAME_STORE_EXT
from video_gc.data.lists import read_list_entries
from video_gc.prep.frame_store import probe_frame_store
from video_gc.prep.lists import PrepError, write_report
from video_gc.prep.parallel import imap_progress
from video_gc.prep.probe import VideoInfo, probe_video
from video_gc.utils.io import atomic_write_text


def _probe_with(job: tuple[str, str]) -> VideoInfo:
    path, backend = job
    if path.endswith(FRAME_STORE_EXT):
        return probe_frame_store(path)
    if backend == "decord":
        return probe_decord(path)
    return probe_video(path)


def probe_decord(path: str) -> VideoInfo:
    """Frame count, fps and size from decord, decoding every frame (as the data pipeline would)."""
    import decord

    info = VideoInfo(path)
    if not os.path.isfile(path):
        info.error = "missing"
        return info
    try:
        reader = decord.VideoReader(path, num_threads=1)
        info.fps = float(reader.get_avg_fps())
        while True:
            try:
                frame = reader.next()
            except StopIteration:
                break
            info.frames += 1
        if info.frames:
            info.height, info.width = frame.shape[:2]
            info.duration = info.frames / info.fps if info.fps else 0.0
        else:
            info.error = "no frames decoded"
    except Exception as err:  # decord raises DECORDError / RuntimeError for every kind of bad file
        info.error = f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return info


def _distribution(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return "min {:.4g} / p5 {:.4g} / median {:.4g} / p95 {:.4g} / max {:.4g}".format(*q)


def check_list(list_path: str, output: str | None = None, prefix: str = "", separator: str = " ",
               min_frames: int = 1, backend: str = "pyav", workers: int = 1, verbose: bool = True) -> dict:
    """Decode every entry; write the cleaned list (default ``<list>.clean.csv``) and a report CSV.

    Without a ``prefix``, relative paths are rewritten relative to the cleaned
    list's folder, so the cleaned list works wherever it is written.
    """
    if backend not in ("pyav", "decord"):
        raise PrepError(f"backend must be pyav or decord, got {backend!r}")
    # Labels are copied to the cleaned list as written: a list may be checked before its labels are numbered.
    entries = read_list_entries(list_path, separator=separator, prefix=prefix, integer_labels=False)
    paths = [entry.path for entry in entries]
    start = time.time()
    probes = {info.path: info for info in imap_progress(_probe_with, [(p, backend) for p in dict.fromkeys(paths)],
                                                         workers=workers, desc="check")}
    root_name, ext = os.path.splitext(list_path)
    output = output or f"{root_name}.clean{ext or '.csv'}"
    if os.path.abspath(output) == os.path.abspath(list_path):
        raise PrepError(f"--output {output} would overwrite the list being checked")
    out_dir = os.path.dirname(os.path.abspath(output))
    kept, bad = [], []
    for number, rel, path, label in entries:
        info = probes[path]
        if info.error == "missing":
            status, reason = "missing", "file not found"
        elif info.error == "no frames decoded":
            status, reason = "zero-frame", info.error
        elif info.error:
            status, reason = "unreadable", info.error
        elif info.frames < min_frames:
            status, reason = "too-short", f"{info.frames} frames < {min_frames}"
        else:
            written = rel if prefix or os.path.isabs(rel) else os.path.relpath(path, out_dir).replace(os.sep, "/")
            kept.append(f"{written}{separator}{label}")
            continue
        bad.append({"split": os.path.basename(list_path), "item": rel, "source": f"{list_path}:{number}",
                    "status": status, "reason": reason})
    atomic_write_text(output, "".join(f"{line}\n" for line in kept))
    report = f"{os.path.splitext(output)[0]}.report.csv"
    write_report(report, bad)
    good = [probes[p] for p in dict.fromkeys(paths) if probes[p].ok]
    counts = {s: sum(b["status"] == s for b in bad) for s in ("missing", "unreadable", "zero-frame", "too-short")}
    summary = {"list": list_path, "entries": len(entries), "kept": len(kept), **counts, "output": output,
               "report": report, "seconds": round(time.time() - start, 2),
               "fps": _distribution([i.fps for i in good]), "frames": _distribution([i.frames for i in good]),
               "duration": _distribution([i.duration for i in good])}
    if verbose:
        print(f"{list_path}: {len(entries)} entries, {len(kept)} kept; missing {counts['missing']}, unreadable "
              f"{counts['unreadable']}, zero-frame {counts['zero-frame']}, too short (< {min_frames} frames) "
              f"{counts['too-short']} ({summary['seconds']} s)")
        print(f"  fps:        {summary['fps']}\n  frames:     {summary['frames']}\n"
              f"  duration s: {summary['duration']}")
        print(f"  cleaned list: {output}; bad entries and reasons: {report}")
    return summary
