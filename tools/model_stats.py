"""Parameters and FLOPs of the models in configs, beside the papers' figures.

    python tools/model_stats.py --cfg configs/kinetics
    python tools/model_stats.py --cfg configs/kinetics/SLOW_8x8_R50_GC.yaml --crop 256 --json
"""

import argparse
import json
import sys

from video_gc.config import ConfigError
from video_gc.models.flops import CONVENTIONS
from video_gc.bench.zoo import find_configs, format_table, model_stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="a config file or a folder of configs")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    parser.add_argument("--crop", type=int, default=None, help="square crop of one view (default DATA.TRAIN_CROP_SIZE)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--convention", choices=CONVENTIONS, default="zoo", help="FLOP counting convention")
    args = parser.parse_args(argv)
    try:
        rows = [model_stats(path, args.opts, args.crop, args.convention) for path in find_configs(args.cfg)]
    except (ConfigError, FileNotFoundError) as err:
        print(f"model_stats: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows[0].to_dict() if len(rows) == 1 else {"models": [r.to_dict() for r in rows]}))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
