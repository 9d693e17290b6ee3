#!/usr/bin/env python
"""Convert ImageNet / PySlowFast / PyTorchVideo / video_gc checkpoints for the model a config builds.

    python tools/convert_checkpoint.py --cfg CFG [--opts KEY VALUE ...] --input FILE --output OUT.pyth \
        [--format auto|torchvision|caffe2|pyslowfast|pytorchvideo|video_gc] [--inflate average|center] \
        [--to video_gc|pytorchvideo] [--strict] [--verbose]
"""

import argparse
import sys

from video_gc.config import ConfigError, load_config
from video_gc.engine.common import model_config_from_checkpoint
from video_gc.models.weights import FORMATS, INFLATE_MODES, pytorchvideo_builder
from video_gc.models.weights.convert import TARGETS, convert_checkpoint
from video_gc.utils.io import CheckpointError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default=None, help="YAML config of the target model (default: the defaults)")
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE config overrides")
    parser.add_argument("--input", required=True, help="checkpoint to convert (.pth, .pkl, .pyth)")
    parser.add_argument("--output", required=True, help="where to write {'model_state': ...}")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="layout of --input")
    parser.add_argument("--inflate", default="average", choices=INFLATE_MODES, help="how 2D kernels become 3D")
    parser.add_argument("--to", default="video_gc", choices=TARGETS, help="names of the written state dict")
    parser.add_argument("--strict", action="store_true", help="fail on any partial match")
    parser.add_argument("--verbose", action="store_true", help="list every loaded and inflated key")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = model_config_from_checkpoint(load_config(args.cfg, args.opts), args.input, args.opts)
        report = convert_checkpoint(
            cfg, args.input, args.output, fmt=args.format, inflate_mode=args.inflate, to=args.to, strict=args.strict
        )
    except (ConfigError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.format(verbose=args.verbose))
    print(f"wrote {args.output} ({args.to} layout, MODEL.ARCH {cfg.MODEL.ARCH})")
    if args.to == "pytorchvideo":
        print(f"load it with pytorchvideo.models.hub.{pytorchvideo_builder(cfg.MODEL.ARCH)}() and "
              f"load_state_dict(checkpoint['model_state'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
