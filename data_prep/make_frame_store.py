"""Store the videos of data lists as JPEG frames (one file per video) and write lists that point at them."""

import os
import sys

from video_gc.prep.cli import make_parser, run
from video_gc.prep.frame_store import DEFAULT_QUALITY, make_frame_store

EXAMPLE = """example:
  python data_prep/make_frame_store.py --list data/kinetics400/train.csv data/kinetics400/val.csv \\
      --output data/kinetics400_frames --workers 8
  # train with: DATA.PATH_TO_DATA_DIR data/kinetics400_frames DATA.FORMAT frames
The output mirrors the input below the deepest folder holding every list and video:
data/kinetics400/videos/a/b.mp4 becomes data/kinetics400_frames/videos/a/b.frames.
Stores that exist and read back are skipped, so an interrupted run is resumed by running it again.
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--list", nargs="+", required=True, help="lists of 'path label' lines")
    parser.add_argument("--output", required=True, help="output folder (stores and lists)")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help=f"JPEG quality 1..100 (default {DEFAULT_QUALITY})")
    parser.add_argument("--short-side", type=int, default=0,
                        help="resize frames to this short side first (default 0: keep the size)")
    parser.add_argument("--prefix", default="", help="DATA.PATH_PREFIX of the lists (default: relative to each list)")
    parser.add_argument("--separator", default=" ", help="DATA.PATH_LABEL_SEPARATOR (default a space)")
    parser.add_argument("--report", default=None, help="failure report CSV (default OUTPUT/frame_store_report.csv)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    return run(lambda: make_frame_store(args.list, args.output, quality=args.quality, short_side=args.short_side,
                                        workers=args.workers, prefix=args.prefix, separator=args.separator,
                                        report=args.report))


if __name__ == "__main__":
    sys.exit(main())
