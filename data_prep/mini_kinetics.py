"""Mini-Kinetics-200: class list + train/val YouTube-id lists -> lists over a prepared Kinetics-400 folder."""

import sys

from video_gc.prep.cli import make_parser, run
from video_gc.prep.mini_kinetics import prepare_mini_kinetics

EXAMPLE = """example:
  python data_prep/kinetics.py --annotations kinetics400/train.csv kinetics400/validate.csv \\
      --videos raw/kinetics400 --output data/kinetics400
  python data_prep/mini_kinetics.py --classes mini/mini_kinetics_200_classes.txt \\
      --train-ids mini/train_ytid_list.txt --val-ids mini/val_ytid_list.txt \\
      --kinetics data/kinetics400 --output data/mini_kinetics200
  # then: DATA.PATH_TO_DATA_DIR data/mini_kinetics200 MODEL.NUM_CLASSES 200
Class list: one Kinetics label a line. Id lists: one YouTube id, clip name
({id}_{start:06d}_{end:06d}) or file path a line; text after a space/tab/comma is ignored.
No video is re-encoded: the lists point at the Kinetics clips.
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--classes", required=True, help="the 200 class labels, one a line (line order = index)")
    parser.add_argument("--train-ids", required=True, help="train YouTube ids")
    parser.add_argument("--val-ids", required=True, help="val YouTube ids")
    parser.add_argument("--kinetics", required=True, help="folder written by data_prep/kinetics.py")
    parser.add_argument("--output", required=True, help="Mini-Kinetics list folder (created)")
    args = parser.parse_args(argv)
    return run(lambda: prepare_mini_kinetics(args.classes, args.train_ids, args.val_ids, args.kinetics, args.output))


if __name__ == "__main__":
    sys.exit(main())
