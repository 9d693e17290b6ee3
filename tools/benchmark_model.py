"""Clips per second of a video_gc model against PyTorchVideo's slow_r50 / c2d_r50,
same weights, same input, one process; plus the max |logit difference|. On the CPU, also
against ONNX Runtime running our fp32 model exported to ONNX (skipped, with a line saying
why, without onnxruntime).

    python tools/benchmark_model.py --cfg configs/kinetics/SLOW_8x8_R50.yaml
    python tools/benchmark_model.py --cfg configs/kinetics/SLOW_8x8_R50.yaml --mode best --batch 8 --json

Inference at each --batch (default 1 and 8) and a training step (forward,
backward, SGD) at --train-batch; interleaved repeats, medians. Default clip 8x112x112
so that a run takes minutes on a laptop CPU; --crop 224 for the model-zoo size.
"""

import argparse
import json
import sys

from video_gc.bench.model import FP32_TOLERANCE, benchmark_model, dataset_agreement
from video_gc.bench.timing import add_timing_args, setup_timing
from video_gc.config import ConfigError, load_config
from video_gc.registry import INFERENCE_MODES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="config file (MODEL.ARCH slow or c2d, no context blocks)")
    parser.add_argument("--mode", choices=INFERENCE_MODES.names(), default=None,
                        help="our inference mode (default TEST.INFERENCE_MODE, fp32)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=8, help="training-step batch (0: skip)")
    add_timing_args(parser, repeats=5, warmup=1)
    parser.add_argument("--weights", default=None,
                        help="timing: a PyTorchVideo checkpoint for both models; --agreement: our model's checkpoint "
                             "(any layout the test loop reads). Default: random weights, BN calibrated")
    parser.add_argument("--agreement", metavar="DATA_DIR", default=None,
                        help="instead of timing: top-1 agreement of --mode with fp32 on DATA_DIR's test split")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    device = setup_timing(args)
    try:
        cfg = load_config(args.cfg, args.opts)
        mode = args.mode or cfg.TEST.INFERENCE_MODE
        if args.agreement:
            result = dataset_agreement(cfg, args.agreement, mode=mode, crop=args.crop, frames=args.frames, device=device,
                                       weights=args.weights)
            print(json.dumps(result) if args.json else "  ".join(f"{k} {v}" for k, v in result.items()))
            return 0
        result = benchmark_model(
            cfg, config_name=args.cfg, mode=mode, batch_sizes=args.batch, train_batch=args.train_batch,
            crop=args.crop, frames=args.frames, repeats=args.repeats, warmup=args.warmup, device=device,
            weights=args.weights,
        )
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"benchmark_model: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json()) if args.json else result.format())
    if result.resolved_mode in ("reference", "fused", "channels_last", "fp32"):
        diffs = {"PyTorchVideo": result.max_abs_diff, "ONNX Runtime": result.onnxruntime.get("max_abs_diff", 0.0)}
        bad = [f"{side} logits differ from ours by {diff:.3g} >= {FP32_TOLERANCE} in fp32"
               for side, diff in diffs.items() if not diff < FP32_TOLERANCE]
        if bad:
            print(f"benchmark_model: {'; '.join(bad)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
