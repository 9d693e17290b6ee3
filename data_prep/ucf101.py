"""UCF-101: UCF-101/ + ucfTrainTestlist/ -> resized videos and split{1,2,3}/ lists, each with a classids.json."""

import sys

from video_gc.prep.cli import add_resize_options, encoding, make_parser, run
from video_gc.prep.ucf101 import prepare_ucf101

EXAMPLE = """example:
  python data_prep/ucf101.py --root raw/UCF-101 --splits raw/ucfTrainTestlist \\
      --output data/ucf101 --short-side 256 --workers 8
  # then: DATA.PATH_TO_DATA_DIR data/ucf101/split1 MODEL.NUM_CLASSES 101
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--root", required=True, help="the UCF-101 folder (UCF-101/<Class>/*.avi)")
    parser.add_argument("--splits", required=True, help="ucfTrainTestlist folder (classInd.txt, train/testlist0k.txt)")
    parser.add_argument("--output", required=True, help="dataset folder (created)")
    add_resize_options(parser)
    args = parser.parse_args(argv)
    return run(lambda: prepare_ucf101(args.root, args.splits, args.output, short_side=args.short_side,
                                      workers=args.workers, backend=args.backend, **encoding(args)))


if __name__ == "__main__":
    sys.exit(main())
