#!/usr/bin/env python
"""Export a checkpoint's model to ONNX or TorchScript, checked against PyTorch, with a JSON sidecar.

    python tools/export_model.py --checkpoint CKPT [--cfg CFG] [--opts KEY VALUE ...] \
        --format onnx|torchscript [--batch dynamic|N] --output FILE [--opset 17] [--tolerance 1e-4]
"""

import argparse
import sys

from video_gc.config import ConfigError, load_config
from video_gc.engine.common import model_config_from_checkpoint
from video_gc.export import DEFAULT_OPSET, FORMATS, TOLERANCE, ExportError, export_checkpoint
from video_gc.utils.io import CheckpointError


def _batch(text: str):
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="weights to export (a video_gc checkpoint, or any "
                        "layout TEST.CHECKPOINT_TYPE names)")
    parser.add_argument("--cfg", default=None, help="YAML config the model was trained with (preprocessing, "
                        "classes); the model's structure comes from the checkpoint when it stores a config")
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE config overrides")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--batch", type=_batch, default=None, metavar="dynamic|N",
                        help="batch axis of the exported input (default: dynamic)")
    parser.add_argument("--output", required=True, help="file to write; the sidecar goes to FILE.json")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="max abs logit difference allowed")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = model_config_from_checkpoint(load_config(args.cfg, args.opts), args.checkpoint, args.opts)
        result = export_checkpoint(cfg, args.checkpoint, args.output, args.format, batch=args.batch,
                                   opset=args.opset, tolerance=args.tolerance)
    except (ConfigError, CheckpointError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shape = ["N" if d is None else d for d in result.sidecar["input"]["shape"]]
    diffs = ", ".join(f"batch {b}: {d:.3g}" for b, d in result.max_abs_diff.items())
    print(f"max abs logit difference vs PyTorch ({result.sidecar['check']['runtime']}): {diffs} "
          f"(tolerance {args.tolerance:g})")
    print(f"wrote {result.path} ({args.format}, input {shape} NCTHW float32) and {result.sidecar_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
