"""What the data_prep/ scripts share: the parser with its example, the resize options, bad input -> exit 1."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from video_gc.data.lists import DataListError
from video_gc.prep.lists import PrepError
from video_gc.prep.resize import (DEFAULT_BFRAMES, DEFAULT_CRF, DEFAULT_GOP, DEFAULT_TUNE, MAX_BFRAMES, TUNES,
                                  X264_OWN, parse_bframes)


def make_parser(description: str, example: str) -> argparse.ArgumentParser:
    """An argparse parser whose --help ends with the example, printed verbatim."""
    return argparse.ArgumentParser(description=description, epilog=example,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _frames(text: str) -> int:
    """argparse type: a whole number of frames >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def bframes_arg(text: str) -> int | None:
    """argparse type of ``--bframes``: 0 to MAX_BFRAMES, or ``x264`` (None: x264's own layout)."""
    try:
        return parse_bframes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to {MAX_BFRAMES} or "
                                         f"{X264_OWN}") from None


def add_resize_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--short-side", type=int, default=256, help="256 (default) or 320")
    parser.add_argument("--gop", type=_frames, default=DEFAULT_GOP,
                        help=f"a keyframe at least every GOP frames (default {DEFAULT_GOP}): random training clips "
                             "decode from the keyframe before them, so short is fast; files grow a few percent"),
    parser.add_argument("--tune", choices=TUNES, default=DEFAULT_TUNE,
                        help=f"x264 --tune (default {DEFAULT_TUNE}: no CABAC or deblocking, about a third less CPU "
                             "to decode a clip for a sixth more bytes); none for x264's plain settings")
    parser.add_argument("--bframes", type=bframes_arg, default=DEFAULT_BFRAMES,
                        metavar=f"{{0..{MAX_BFRAMES},{X264_OWN}}}",
                        help=f"B-frames in a row, none of them a reference, so readers skip the ones a clip does not "
                             f"use (default {DEFAULT_BFRAMES}: about a fifth less CPU per clip, under 1%% more bytes); "
                             f"{X264_OWN} for x264's own layout. Overrides a --tune's B-frame settings")
    parser.add_argument("--crf", type=int, default=DEFAULT_CRF,
                        help=f"x264 quality, lower is better and bigger (default {DEFAULT_CRF})")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--backend", choices=("auto", "ffmpeg", "pyav"), default="auto",
                        help="auto = the ffmpeg CLI (on the PATH, else imageio-ffmpeg's), else PyAV")


def encoding(args: argparse.Namespace) -> dict:
    """The encoder settings of :func:`add_resize_options`, as keyword arguments of the prep functions."""
    return {"gop": args.gop, "tune": args.tune, "crf": args.crf, "bframes": args.bframes}


def run(step: Callable[[], object]) -> int:
    """Run a preparation step; bad input prints ``error: ...`` (file, line) and exits 1, no traceback."""
    try:
        step()
    except (PrepError, DataListError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
