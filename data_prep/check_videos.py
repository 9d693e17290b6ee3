"""Decode every video (or frame-store file) of one or more lists; report unreadable / zero-frame / too-short ones;
write cleaned lists."""

import os
import sys

from video_gc.prep.check import check_list
from video_gc.prep.cli import make_parser, run

EXAMPLE = """example:
  python data_prep/check_videos.py --list data/kinetics400/train.csv data/kinetics400/val.csv --min-frames 64
  # writes data/kinetics400/train.clean.csv (+ train.clean.report.csv) and the same for val;
  # review them, then replace the lists: mv data/kinetics400/train.clean.csv data/kinetics400/train.csv
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--list", nargs="+", required=True, help="lists of 'path label' lines")
    parser.add_argument("--output", default=None, help="cleaned list (one --list only; default LIST.clean.csv)")
    parser.add_argument("--prefix", default="", help="DATA.PATH_PREFIX (default: paths relative to the list)")
    parser.add_argument("--separator", default=" ", help="DATA.PATH_LABEL_SEPARATOR (default a space)")
    parser.add_argument("--min-frames", type=int, default=1, help="shorter videos are 'too short' (default 1)")
    parser.add_argument("--backend", choices=("pyav", "decord"), default="pyav", help="decoder (default pyav)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    args = parser.parse_args(argv)
    if args.output and len(args.list) > 1:
        parser.error("--output needs exactly one --list")

    def step():
        bad = 0
        for path in args.list:
            summary = check_list(path, output=args.output, prefix=args.prefix, separator=args.separator,
                                 min_frames=args.min_frames, backend=args.backend, workers=args.workers)
            bad += summary["entries"] - summary["kept"]
        print(f"{len(args.list)} list(s) checked: {bad} bad entries in all")

    return run(step)


if __name__ == "__main__":
    sys.exit(main())
