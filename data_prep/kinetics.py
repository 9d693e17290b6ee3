"""Kinetics-400: official annotation CSVs + downloaded videos -> resized clips, lists, classids.json."""

import sys

from video_gc.prep.cli import add_resize_options, encoding, make_parser, run
from video_gc.prep.kinetics import prepare_kinetics

EXAMPLE = """example:
  python data_prep/kinetics.py --annotations kinetics400/train.csv kinetics400/validate.csv \\
      --videos raw/kinetics400 --output data/kinetics400 --short-side 256 --workers 8
  # then: DATA.PATH_TO_DATA_DIR data/kinetics400
Videos are found recursively by name: trimmed clips {youtube_id}_{start:06d}_{end:06d}.*
or untrimmed downloads {youtube_id}.* (cut to time_start..time_end).
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--annotations", nargs="+", required=True, help="official CSV files")
    parser.add_argument("--videos", required=True, help="folder of downloaded videos (searched recursively)")
    parser.add_argument("--output", required=True, help="dataset folder (created)")
    parser.add_argument("--classids", default=None, help="take the class indices from this classids.json")
    add_resize_options(parser)
    args = parser.parse_args(argv)
    return run(lambda: prepare_kinetics(args.annotations, args.videos, args.output, short_side=args.short_side,
                                        workers=args.workers, classids=args.classids, backend=args.backend,
                                        **encoding(args)))


if __name__ == "__main__":
    sys.exit(main())
