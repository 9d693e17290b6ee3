"""Cost of the context blocks on Slow 8x8 R50: measured latency overhead beside
FLOPs and parameter overhead (NL5, SNL5, GC5, GC-all, SE, CGD, NA).

    python tools/benchmark_blocks.py --cfg configs/kinetics/SLOW_8x8_R50.yaml
    python tools/benchmark_blocks.py --cfg configs/kinetics/SLOW_8x8_R50.yaml --mode reference --repeats 20 --json
"""

import argparse
import json
import sys

from video_gc.bench.blocks import DEFAULT_VARIANTS, block_overhead, format_block_table, rows_to_json
from video_gc.bench.timing import add_timing_args, setup_timing
from video_gc.config import ConfigError
from video_gc.registry import INFERENCE_MODES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="the baseline config (no context blocks)")
    parser.add_argument("--mode", choices=INFERENCE_MODES.names(), default="fp32", help="inference mode for every model")
    parser.add_argument("--variants", nargs="+", choices=tuple(DEFAULT_VARIANTS), default=tuple(DEFAULT_VARIANTS),
                        help="which models (baseline always included)")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    add_timing_args(parser, repeats=10, warmup=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for every model")
    args = parser.parse_args(argv)
    device = setup_timing(args)
    names = ["baseline"] + [n for n in args.variants if n != "baseline"]
    try:
        rows = block_overhead(
            args.cfg, variants={n: DEFAULT_VARIANTS[n] for n in names}, mode=args.mode, batch=args.batch,
            crop=args.crop, frames=args.frames, repeats=args.repeats, warmup=args.warmup, device=device, opts=args.opts,
        )
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"benchmark_blocks: {err}", file=sys.stderr)
        return 2
    print(json.dumps(rows_to_json(rows)) if args.json else format_block_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
