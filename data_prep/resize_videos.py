"""Resize videos to H.264 mp4 (no audio) with a fixed short side; resumable and atomic."""

import os
import sys

from video_gc.prep.cli import add_resize_options, encoding, make_parser, run
from video_gc.data.lists import read_text_lines
from video_gc.prep.resize import resize_videos

EXAMPLE = """example:
  python data_prep/resize_videos.py --input raw/videos --output data/videos_256 --short-side 256 --workers 8
  python data_prep/resize_videos.py --input raw/videos --output data/videos_256_gop16 --gop 16
  python data_prep/resize_videos.py --input files.txt --output data/videos_320 --short-side 320
A folder keeps its sub-folders; a .txt list (one path per line) is written flat by file name.
Existing outputs that decode are skipped, so an interrupted run is resumed by running it again.
"""


def main(argv=None) -> int:
    parser = make_parser(__doc__, EXAMPLE)
    parser.add_argument("--input", required=True, help="folder of videos, or a text file with one path a line")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--report", default=None, help="failure report CSV (default OUTPUT/resize_report.csv)")
    add_resize_options(parser)
    args = parser.parse_args(argv)

    def step():
        inputs = [line for _, line in read_text_lines(args.input)] if os.path.isfile(args.input) else args.input
        resize_videos(inputs, args.output, short_side=args.short_side, workers=args.workers, report=args.report,
                      backend=args.backend, **encoding(args))

    return run(step)


if __name__ == "__main__":
    sys.exit(main())
