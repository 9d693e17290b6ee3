#!/usr/bin/env python
"""Classify videos with a trained model.

    python tools/demo_net.py --cfg FILE --video VIDEO.mp4 [--checkpoint FILE] [--opts KEY VALUE ...]
    python tools/demo_net.py --cfg FILE (--videos DIR | --list FILE | --video VIDEO.mp4) --output PRED.csv \
        [--window SECONDS --stride SECONDS] [--checkpoint FILE] [--top_k 5] [--opts KEY VALUE ...]

Exit status: 0 every video classified; 1 an error stopped the run or no video could be classified;
2 a config or argument error; 3 finished, with unreadable videos skipped (named on stderr).
"""

import argparse
import sys

from video_gc.engine.predict import main_predict

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the top-5 classes of one video, or write a CSV of the "
                                     "top classes of many videos or of sliding windows, with a trained model.")
    parser.add_argument("--cfg", required=True, help="the config the model was trained with")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file to classify")
    source.add_argument("--videos", help="classify every video file under this folder (recursive)")
    source.add_argument("--list", dest="list_file", help="classify the videos of this 'path label' list")
    parser.add_argument("--output", help="CSV to write (needed with --videos, --list or --window)")
    parser.add_argument("--window", type=float, help="classify windows of this many seconds instead of whole videos")
    parser.add_argument("--stride", type=float, help="seconds between the starts of consecutive windows")
    parser.add_argument("--checkpoint", default="",
                        help="weights (default: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in OUTPUT_DIR)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args()
    sys.exit(main_predict(args.cfg, args.video, videos=args.videos, list_file=args.list_file, output=args.output,
                          window=args.window, stride=args.stride, checkpoint=args.checkpoint, opts=args.opts,
                          top_k=args.top_k))
