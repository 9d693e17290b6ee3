#!/usr/bin/env python
"""Pre-logit features (per view and per video) of every video of a list or folder, resumable and
shardable under torchrun.

    python tools/extract_features.py --checkpoint CKPT [--cfg CFG] (--list FILE | --videos DIR) --output DIR \
        [--chunk-size 256] [--opts KEY VALUE ...]

Exit status: 0 every video extracted; 3 finished, but some videos could not be read (listed in
DIR/failed.csv; rerunning the command retries them); 1 an error stopped the run, or no video was
extracted; 2 a config error.
"""

import argparse
import sys

from video_gc.features import DEFAULT_CHUNK_SIZE, main_extract


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="weights (a video_gc checkpoint, or any layout "
                        "TEST.CHECKPOINT_TYPE names); a video_gc checkpoint also gives the model's structure")
    parser.add_argument("--cfg", default=None, help="YAML config of the test settings (clip length, crops, views, "
                        "normalisation): pass the config the model was trained with")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", dest="list_file", help="a 'path label' data list")
    source.add_argument("--videos", help="every video file under this folder (recursive; label -1)")
    parser.add_argument("--output", required=True, help="folder for the features (a rerun resumes in it)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help="videos per chunk file; a killed run loses at most one unfinished chunk per process")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(main_extract(checkpoint=args.checkpoint, output=args.output, cfg_file=args.cfg, list_file=args.list_file,
                          videos=args.videos, chunk_size=args.chunk_size, opts=args.opts))
