#!/usr/bin/env python
"""Benchmark the data pipeline (decode-once 30-view testing vs. the decoding limit, view-by-view
decoding and PyTorchVideo; training clips/s).

    python tools/benchmark_data.py                      # 6 synthetic 10 s 30 fps 340x256 videos
    python tools/benchmark_data.py --videos-dir DIR --limit 20 --json
"""

import argparse
import json
import os
import sys
import tempfile

# Back large CPU tensors (30 float views = 189 MB per video) with huge pages; PyTorch reads
# this once when it loads, so it is set before the first torch import. 0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from video_gc.config import load_config  # noqa: E402
from video_gc.bench.data import format_table, make_benchmark_videos, run_benchmark  # noqa: E402
from video_gc.data.lists import DataListError, find_videos  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-dir", help="folder of videos (default: generate synthetic ones)")
    parser.add_argument("--count", type=int, default=6, help="synthetic videos to generate (default 6)")
    parser.add_argument("--limit", type=int, help="use at most this many videos from --videos-dir")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "video_gc_bench_videos"),
                        help="where synthetic videos are written and reused")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the videos for (a) and (b)")
    parser.add_argument("--train-batches", type=int, default=6, help="batches of 4 clips per (e) measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-pytorchvideo", action="store_true", help="skip (d)")
    parser.add_argument("--cfg", help="config file (data keys: NUM_FRAMES, TEST_CROP_SIZE, backend...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    cfg = load_config(args.cfg, args.opts)
    if args.videos_dir:
        try:
            paths = find_videos(args.videos_dir)[:args.limit or None]
        except DataListError as err:
            print(f"benchmark_data: {err}", file=sys.stderr)
            return 2
    else:
        paths = make_benchmark_videos(args.cache_dir, args.count)
    result = run_benchmark(cfg, paths, repeats=args.repeats, workers=tuple(args.workers),
                           train_batches=args.train_batches, with_pytorchvideo=not args.no_pytorchvideo)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
