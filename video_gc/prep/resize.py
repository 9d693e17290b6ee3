"""Resizing (and trimming) videos to H.264 mp4 with a fixed short side.

One job is one source file -> one output file, optionally cut to
``[start, end)`` seconds (untrimmed Kinetics downloads). The ffmpeg CLI does the
work: the system's when one is on the PATH, else the binary the imageio-ffmpeg
package ships (``ffmpeg_exe``). Without either, PyAV decodes, rescales with
libswscale and encodes through :class:`video_gc.utils.video_io.VideoWriter`.

Both paths put a keyframe at least every ``gop`` frames (x264's ``keyint``; x264
alone puts one only every 250 frames plus scene cuts). A training clip is
decoded from the keyframe before its first frame, so the default 32 makes a
random clip about a fifth cheaper to read than x264's interval, for about an
eighth more bytes (measured: docs/data_preparation.md). Both also use x264's
``--tune fastdecode`` by default (``tune``; no CABAC, no deblocking filter): a
clip takes 16-42% less CPU to decode, for 17-19% more bytes. And both write
``bframes`` (default 3) B-frames between reference frames, none of them a reference
itself (x264 ``b-pyramid none``, ``b-adapt 0``): the reader skips the B-frames a clip
does not use, so a clip decodes about 40% fewer frames and a training item costs about a fifth
less CPU, for under 1% more bytes (None: x264's own layout). Each output
records its settings in the mp4 ``comment`` tag (``recorded_settings``). Either way a
rotated source (a phone video's display matrix) is written upright with no
rotation left, its short side measured on the upright frame, and the
output is written under a temporary name and renamed, an output that already
exists and decodes is skipped (so an interrupted run resumes), and a bad source
becomes a ``failed`` result with the reason instead of an exception.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import av

from video_gc.data.lists import find_videos
from video_gc.prep.lists import PrepError, write_report
from video_gc.prep.parallel import imap_progress
from video_gc.prep.probe import probe_video
from video_gc.utils.video_io import (VideoWriter, display_rotation, rotate_tag, upright, upright_size,
                                     x264_bframes_params)

DEFAULT_SHORT_SIDE = 256
# Most frames between two keyframes. Chosen with `tools/benchmark_data.py --train`: see
# docs/performance.md#training-input-path for the time per clip and the size cost.
DEFAULT_GOP = 32
DEFAULT_CRF = 18
# x264's tune for the outputs: fastdecode turns off CABAC and the deblocking filter, the two costliest
# steps of decoding (measured: docs/data_preparation.md#decoding-speed-tune-fastdecode).
DEFAULT_TUNE = "fastdecode"
# B-frames in a row, none a reference, so that readers skip the unwanted ones (measured:
# docs/data_preparation.md#b-frames-that-readers-skip---bframes).
DEFAULT_BFRAMES = 3
MAX_BFRAMES = 16  # x264's limit
X264_OWN = "x264"  # bframes as x264 lays them out (adaptive count, B-pyramid): the recorded and CLI value
# x264's tunes; a job takes one of them or "none".
TUNES = ("none", "fastdecode", "film", "animation", "grain", "stillimage", "psnr", "ssim", "zerolatency")
# The mp4 tag each output carries its settings in, and the text the value starts with.
SETTINGS_TAG = "comment"
SETTINGS_PREFIX = "video_gc resize:"


@dataclass(frozen=True)
class ResizeJob:
    source: str
    output: str
    short_side: int = DEFAULT_SHORT_SIDE
    start: float | None = None  # seconds; None = from the beginning
    end: float | None = None  # seconds; None = to the end
    crf: int = DEFAULT_CRF
    backend: str = "auto"  # auto | ffmpeg | pyav
    gop: int = DEFAULT_GOP  # most frames between two keyframes
    tune: str = DEFAULT_TUNE  # x264 --tune, or "none"
    bframes: int | None = DEFAULT_BFRAMES  # B-frames in a row, none a reference; None: x264's own layout

    def __post_init__(self):
        if not isinstance(self.gop, int) or isinstance(self.gop, bool) or self.gop < 1:
            raise ValueError(f"gop must be a whole number of frames >= 1, got {self.gop!r}")
        check_bframes(self.bframes)
        if self.tune not in TUNES:
            raise ValueError(f"tune must be one of {', '.join(TUNES)}, got {self.tune!r}")


def check_bframes(value: int | None) -> int | None:
    """``value`` if it is a ``bframes`` setting (0 to MAX_BFRAMES, or None: x264's own layout);
    raises ValueError naming it otherwise."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BFRAMES):
        return value
    raise ValueError(f"bframes must be a whole number from 0 to {MAX_BFRAMES} or {X264_OWN}, got {value!r}")


def parse_bframes(text: str) -> int | None:
    """A ``bframes`` setting written as text, as ``--bframes`` takes it: ``x264`` is None."""
    return None if text == X264_OWN else check_bframes(int(text) if text.isdigit() else text)


def bframes_text(bframes: int | None) -> str:
    """How a ``bframes`` setting is written: in the settings tag, on the command line, in names."""
    return X264_OWN if bframes is None else str(bframes)


@dataclass
class ResizeResult:
    job: ResizeJob
    status: str  # written | skipped | missing | failed
    reason: str = ""
    frames: int = 0
    other_settings: bool = False  # skipped, and the kept output has another (or no) recorded gop or bframes


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str | None:
    """The ffmpeg CLI: ``ffmpeg`` on the PATH, else the binary of the imageio-ffmpeg package; None without either."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # not installed, or no binary for this platform
        return None


def settings_text(job: ResizeJob, backend: str) -> str:
    """The value of the settings tag written into ``job``'s output."""
    return (f"{SETTINGS_PREFIX} short_side={job.short_side} crf={job.crf} gop={job.gop} tune={job.tune} "
            f"bframes={bframes_text(job.bframes)} backend={backend}")


def recorded_settings(path: str) -> dict:
    """The settings the resizer recorded in ``path`` (numbers as ints); {} for a file it did not write."""
    try:
        with av.open(path) as container:
            text = container.metadata.get(SETTINGS_TAG, "")
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        return {}
    if not text.startswith(SETTINGS_PREFIX):
        return {}
    pairs = (item.split("=", 1) for item in text[len(SETTINGS_PREFIX):].split() if "=" in item)
    return {key: int(value) if value.isdigit() else value for key, value in pairs}


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side``, the aspect ratio kept, both even."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    scale = short_side / min(width, height)
    even = lambda x: max(2, int(round(x * scale / 2.0)) * 2)  # noqa: E731
    return even(width), even(height)


def _no_frames(job: ResizeJob) -> str:
    window = f" in [{job.start or 0.0:g}, {job.end:g}) s" if job.end is not None else ""
    return f"no frames decoded{window}"


def _resize_pyav(job: ResizeJob) -> int:
    """Decode, cut, rescale and encode with PyAV; returns the number of frames written."""
    start = job.start or 0.0
    with av.open(job.source) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or 30
        if start > 0:
            # Seek to the keyframe before `start`; frames before it are dropped below by time.
            offset = int(start / stream.time_base) if stream.time_base else int(start * av.time_base)
            container.seek(offset, stream=stream, backward=True, any_frame=False)
        writer = None
        try:
            for frame in container.decode(stream):
                if frame.time is not None:
                    if frame.time < start - 1e-6:
                        continue
                    if job.end is not None and frame.time >= job.end - 1e-6:
                        break
                if writer is None:
                    # The output is upright and carries no rotation: its size and short side are the upright frame's.
                    rotation = display_rotation(stream, frame)
                    width, height = output_size(*upright_size(frame.width, frame.height, rotation), job.short_side)
                    writer = VideoWriter(job.output, width, height, fps=float(rate), crf=job.crf, gop=job.gop,
                                         tune=None if job.tune == "none" else job.tune, bframes=job.bframes,
                                         metadata={SETTINGS_TAG: settings_text(job, "pyav")})
                if rotation:
                    # Scaled as stored (to the output size turned back), then turned upright.
                    stored_width, stored_height = upright_size(width, height, rotation)
                    scaled = frame.reformat(width=stored_width, height=stored_height, format="rgb24",
                                            interpolation="AREA")
                    writer.write(upright(scaled.to_ndarray(), rotation))
                else:
                    writer.write(frame.reformat(width=width, height=height, format="yuv420p",
                                                interpolation="AREA"))
            if writer is None:
                raise ValueError(_no_frames(job))
            frames = writer.frames
            writer.close()
            return frames
        except BaseException:
            if writer is not None:
                writer.abort()
            raise


def _resize_ffmpeg(job: ResizeJob) -> int:
    """Same output with the ffmpeg CLI (accurate seek, even sizes via -2, keyframes via -g).

    ffmpeg turns a display-matrix rotation upright before the scale filter and
    leaves none in the output (its default ``-autorotate``). A legacy ``rotate``
    tag alone (see ``display_rotation``) is applied only by ffmpeg versions that
    still read it; ``resize_one`` sends such sources to PyAV when the backend is auto.
    """
    root, ext = os.path.splitext(job.output)
    tmp = f"{root}.partial{ext}"
    os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
    s = job.short_side
    cmd = [ffmpeg_exe() or "ffmpeg", "-nostdin", "-y", "-loglevel", "error"]
    if job.start:
        cmd += ["-ss", f"{job.start:.3f}"]
    cmd += ["-i", job.source]
    if job.end is not None:
        cmd += ["-t", f"{job.end - (job.start or 0.0):.3f}"]
    cmd += ["-map", "0:v:0", "-an", "-sn", "-dn", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(job.crf),
            "-g", str(job.gop), *(() if job.tune == "none" else ("-tune", job.tune)),
            *(() if job.bframes is None else ("-x264-params", x264_bframes_params(job.bframes))), "-pix_fmt", "yuv420p",
            "-vf", f"scale='if(lt(iw,ih),{s},-2)':'if(lt(iw,ih),-2,{s})':flags=area",
            "-metadata", f"{SETTINGS_TAG}={settings_text(job, 'ffmpeg')}", "-movflags", "+faststart", "-f", "mp4", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        if os.path.exists(tmp):
            os.remove(tmp)
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"ffmpeg exit {done.returncode}: {lines[-1] if lines else 'no message'}")
    info = probe_video(tmp, decode_all=False)
    if not info.ok:
        os.remove(tmp)
        # an empty cut window gives a file without a video stream
        raise ValueError(_no_frames(job) if info.error in ("no video stream", "no frames decoded")
                         else f"ffmpeg wrote an unreadable file ({info.error})")
    os.replace(tmp, job.output)
    return info.frames


def _has_rotate_tag(path: str) -> bool:
    """Whether the source's video stream has a legacy ``rotate`` tag (an unreadable file has none:
    resizing it reports why)."""
    try:
        with av.open(path) as container:
            return any(rotate_tag(stream) for stream in container.streams.video[:1])
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        return False


def _other_settings(job: ResizeJob) -> str:
    """What the job's existing output was written with that the job does not ask for; "" if nothing."""
    recorded = recorded_settings(job.output)
    if not recorded:
        return "no recorded settings"
    # Outputs written before --bframes existed have x264's own layout.
    have = {"gop": str(recorded.get("gop")), "bframes": str(recorded.get("bframes", X264_OWN))}
    want = {"gop": str(job.gop), "bframes": bframes_text(job.bframes)}
    return "; ".join(f"{key} {have[key]}, not {want[key]}" for key in want if have[key] != want[key])


def resize_one(job: ResizeJob) -> ResizeResult:
    """Run one job; never raises for a bad source (the result says why).

    An output that already decodes is kept, whatever it was written with; one whose
    recorded gop or B-frame layout is not the job's is flagged (``other_settings``) so that
    the summary says so.
    """
    if probe_video(job.output, decode_all=False).ok:
        differs = _other_settings(job)
        if differs:
            return ResizeResult(job, "skipped", f"kept the existing output ({differs})", other_settings=True)
        return ResizeResult(job, "skipped")
    if not os.path.isfile(job.source):
        return ResizeResult(job, "missing", "source file not found")
    if os.path.getsize(job.source) == 0:
        return ResizeResult(job, "failed", "empty file (0 bytes)")
    backend = job.backend
    if backend == "auto":
        backend = "ffmpeg" if ffmpeg_exe() and not _has_rotate_tag(job.source) else "pyav"
    try:
        frames = _resize_ffmpeg(job) if backend == "ffmpeg" else _resize_pyav(job)
    except (av.error.FFmpegError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as err:
        text = str(err).splitlines()[0] if str(err) else ""
        return ResizeResult(job, "failed", f"{type(err).__name__}: {text}" if text else type(err).__name__)
    return ResizeResult(job, "written", frames=frames)


def run_jobs(jobs: list[ResizeJob], workers: int = 1, desc: str = "resize") -> list[ResizeResult]:
    """Run every job (in ``workers`` processes, with a progress bar); results in job order."""
    if any(job.backend == "ffmpeg" for job in jobs) and not ffmpeg_exe():
        raise PrepError("--backend ffmpeg: no ffmpeg on the PATH and no imageio-ffmpeg package "
                        "(pip install -r requirements.txt, or use --backend pyav or auto)")
    outputs = [job.output for job in jobs]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise PrepError(f"two inputs would be written to the same output {dup}")
    by_output = {r.job.output: r for r in imap_progress(resize_one, jobs, workers=workers, desc=desc)}
    return [by_output[job.output] for job in jobs]


STATUSES = ("written", "skipped", "missing", "failed")


def count_status(results: list[ResizeResult]) -> dict[str, int]:
    """Results per status, and ``other_settings``: the skipped ones kept with another keyframe
    interval or B-frame layout."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    counts["other_settings"] = sum(r.other_settings for r in results)
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    """One line; says "nothing to do" when every output was already there."""
    total = sum(counts[status] for status in STATUSES)
    if counts["written"] == 0 and counts["skipped"] + counts["missing"] + counts["failed"] == total:
        head = f"nothing to do: {counts['skipped']} of {total} outputs already exist and decode"
    else:
        head = f"{counts['written']} written, {counts['skipped']} already there"
    line = f"{head}; {counts['missing']} missing, {counts['failed']} failed"
    if counts.get("other_settings"):
        line += (f"; {counts['other_settings']} of the existing outputs were written with another --gop or "
                 "--bframes (kept as they are: delete them to re-encode)")
    return line


def resize_videos(inputs: str | list[str], output_dir: str, short_side: int = DEFAULT_SHORT_SIDE,
                  workers: int = 1, report: str | None = None, backend: str = "auto",
                  gop: int = DEFAULT_GOP, tune: str = DEFAULT_TUNE, crf: int = DEFAULT_CRF,
                  bframes: int | None = DEFAULT_BFRAMES, verbose: bool = True) -> dict:
    """Resize a folder (recursively) or a list of files into ``output_dir`` as ``.mp4``.

    A folder keeps its sub-folder structure; a list of files is written flat by
    file name. The report CSV (default ``output_dir/resize_report.csv``) lists the
    sources that failed, with the reason.
    """
    if isinstance(inputs, str):
        root = inputs
        sources = find_videos(root)
        rels = [os.path.relpath(p, root) for p in sources]
    else:
        sources = list(inputs)
        if not sources:
            raise PrepError("no input videos given")
        rels = [os.path.basename(p) for p in sources]
    jobs = [ResizeJob(src, os.path.join(output_dir, os.path.splitext(rel)[0] + ".mp4"), short_side, backend=backend,
                      gop=gop, tune=tune, crf=crf, bframes=bframes) for src, rel in zip(sources, rels)]
    start = time.time()
    results = run_jobs(jobs, workers=workers)
    counts = count_status(results)
    report = report or os.path.join(output_dir, "resize_report.csv")
    write_report(report, ({"split": "", "item": os.path.relpath(r.job.output, output_dir), "source": r.job.source,
                           "status": r.status, "reason": r.reason}
                          for r in results if r.status in ("missing", "failed")))
    summary = {**counts, "videos": len(jobs), "gop": gop, "seconds": round(time.time() - start, 2), "report": report}
    if verbose:
        print(f"resize to short side {short_side}, gop {gop} in {output_dir}: {describe_counts(counts)} "
              f"({summary['seconds']} s); failures in {report}")
    return summary
