#!/usr/bin/env python
"""Classify one video: python tools/demo_net.py --cfg FILE --video VIDEO.mp4 [--checkpoint FILE] [--opts KEY VALUE ...]"""

import argparse
import sys

from video_gc.engine.predict import main_predict

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the top-5 classes of one video with a trained model.")
    parser.add_argument("--cfg", required=True, help="the config the model was trained with")
    parser.add_argument("--video", required=True, help="video file to classify")
    parser.add_argument("--checkpoint", default="",
                        help="weights (default: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in OUTPUT_DIR)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args()
    sys.exit(main_predict(args.cfg, args.video, checkpoint=args.checkpoint, opts=args.opts, top_k=args.top_k))
