"""Write the seeded synthetic video dataset (mp4 files + train/val/test lists + classids.json)."""

import os
import sys

from video_gc.prep.cli import make_parser, run
from video_gc.prep.synthetic import MAX_CLASSES, make_synthetic_dataset

EXAMPLE = """example:
  python data_prep/make_synthetic.py --output data/synthetic --num-classes 8 --videos-per-class 40
  # then: DATA.PATH_TO_DATA_DIR data/synthetic MODEL.NUM_CLASSES 8
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--output", required=True, help="dataset folder (created)")
    parser.add_argument("--num-classes", type=int, default=8, help=f"1..{MAX_CLASSES}; classes 2k, 2k+1 "
                        "differ only in the direction of time (default 8)")
    parser.add_argument("--videos-per-class", type=int, default=40, help="default 40")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default 0)")
    parser.add_argument("--num-frames", type=int, default=32, help="frames per video (default 32)")
    parser.add_argument("--fps", type=float, default=30.0, help="default 30")
    parser.add_argument("--width", type=int, default=112, help="even (default 112)")
    parser.add_argument("--height", type=int, default=112, help="even (default 112)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="per class (default 0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="per class (default 0.15)")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="processes")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset made with other options")
    args = parser.parse_args(argv)
    return run(lambda: make_synthetic_dataset(
        args.output, num_classes=args.num_classes, videos_per_class=args.videos_per_class, seed=args.seed,
        num_frames=args.num_frames, fps=args.fps, size=(args.width, args.height), val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, workers=args.workers, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
