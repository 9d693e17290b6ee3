#!/usr/bin/env python
"""Benchmark the data pipeline (decode-once 30-view testing vs. the decoding limit, view-by-view
decoding and PyTorchVideo; training clips/s), or with --train the training input path: CPU time
per training clip on the source videos, on our resizer's re-encodes and on a frame store of them,
against PyTorchVideo, PySlowFast's way and the decoding floors.

    python tools/benchmark_data.py                      # 6 synthetic 10 s 30 fps 340x256 videos
    python tools/benchmark_data.py --videos-dir DIR --limit 20 --json
    python tools/benchmark_data.py --train              # 6 Kinetics-like videos, 12 clips each
    python tools/benchmark_data.py --train --source-size 640x360   # sources as large as downloads
    python tools/benchmark_data.py --train --gops 16 32 --videos-dir DIR --limit 6
    python tools/benchmark_data.py --train --bframes 3 x264   # skippable B-frames against x264's own
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
from video_gc.bench.train_data import format_train_table, make_kinetics_like_videos, run_train_benchmark  # noqa: E402
from video_gc.data.lists import DataListError, find_videos  # noqa: E402
from video_gc.prep.cli import bframes_arg  # noqa: E402
from video_gc.prep.resize import DEFAULT_BFRAMES, DEFAULT_GOP, DEFAULT_SHORT_SIDE  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-dir", help="folder of videos (default: generate synthetic ones)")
    parser.add_argument("--count", type=int, default=6, help="synthetic videos to generate (default 6)")
    parser.add_argument("--limit", type=int, help="use at most this many videos from --videos-dir")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "video_gc_bench_videos"),
                        help="where synthetic videos (and --train's re-encodes) are written and reused")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the videos for (a) and (b)")
    parser.add_argument("--train-batches", type=int, default=6, help="batches of 4 clips per (e) measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-pytorchvideo", action="store_true", help="skip (d), or with --train the PyTorchVideo row")
    parser.add_argument("--cfg", help="config file (data keys: NUM_FRAMES, TEST_CROP_SIZE, backend...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    train = parser.add_argument_group("--train: the training input path")
    train.add_argument("--train", action="store_true", help="measure training clips instead (see the module help)")
    train.add_argument("--clips", type=int, default=12, help="clips per video for each row (default 12)")
    train.add_argument("--gops", type=int, nargs="+", default=[DEFAULT_GOP],
                       help=f"re-encode with each of these --gop values (default {DEFAULT_GOP}); "
                            "--gop 1 (all-intra, for the floor) and 250 (size reference) are always made")
    train.add_argument("--bframes", type=bframes_arg, nargs="+", default=[DEFAULT_BFRAMES],
                       help=f"and with each of these resizer --bframes values (default {DEFAULT_BFRAMES}; "
                            "x264: x264's own layout)")
    train.add_argument("--seconds", type=float, default=10.0, help="length of the generated videos (default 10)")
    train.add_argument("--source-size", default="340x256", help="WxH of the generated videos (default 340x256)")
    train.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE, help="of the re-encodes (default 256)")
    train.add_argument("--backends", nargs="+", choices=("decord", "pyav"), default=["decord", "pyav"],
                       help="our rows; the first is 'ours' in the ratios")
    train.add_argument("--normalize-on", choices=("device", "cpu"), default="device",
                       help="device (default): clips end as uint8 for the GPU to normalise, as in a CUDA run "
                            "(DATA.NORMALIZE_ON_DEVICE auto); cpu: as normalised floats, as in a CPU run")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.train and (args.clips < 1 or min(args.gops) < 1):
        parser.error("--clips and --gops must be >= 1")
    width, _, height = args.source_size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) % 2 == 0 == int(height) % 2 and int(height) > 0):
        parser.error(f"--source-size must be WxH with even sizes, e.g. 640x360, got {args.source_size!r}")

    cfg = load_config(args.cfg, args.opts)
    if args.videos_dir:
        try:
            paths = find_videos(args.videos_dir)[:args.limit or None]
        except DataListError as err:
            print(f"benchmark_data: {err}", file=sys.stderr)
            return 2
    elif args.train:
        paths = make_kinetics_like_videos(args.cache_dir, args.count, seconds=args.seconds, width=int(width),
                                          height=int(height))
    else:
        paths = make_benchmark_videos(args.cache_dir, args.count)
    if args.train:
        source = ("source: the given videos" if args.videos_dir
                  else "source: x264 defaults (keyint 250 + scene cuts, B-frames)")
        result = run_train_benchmark(cfg, paths, cache_dir=args.cache_dir, gops=tuple(args.gops), clips=args.clips,
                                     source_name=source, backends=tuple(args.backends),
                                     with_pytorchvideo=not args.no_pytorchvideo, short_side=args.short_side,
                                     uint8_clips=args.normalize_on == "device", bframes=tuple(args.bframes))
        print(json.dumps(result) if args.json else format_train_table(result))
        return 0
    result = run_benchmark(cfg, paths, repeats=args.repeats, workers=tuple(args.workers),
                           train_batches=args.train_batches, with_pytorchvideo=not args.no_pytorchvideo)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
