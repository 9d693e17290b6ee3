"""argparse front ends of tools/analyze_context.py and tools/visualize_context.py."""

from __future__ import annotations

import argparse
import sys


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="path to a YAML config")
    parser.add_argument("--checkpoint", default=None,
                        help="training checkpoint (model_state); default: TEST.CHECKPOINT_FILE_PATH or random init")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"),
                        help="list the videos come from (one deterministic centre clip each)")


def _message(err: Exception) -> str:
    # str(KeyError) adds quotes around the message.
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


def _load(args):
    """The config, with the model config stored in the checkpoint the tool reads (if any)."""
    from video_gc.config import load_config
    from video_gc.engine.common import model_config_from_checkpoint

    cfg = load_config(args.cfg_file, args.opts)
    path = args.checkpoint or cfg.TEST.CHECKPOINT_FILE_PATH
    return model_config_from_checkpoint(cfg, path, args.opts) if path else cfg


def main_analyze(argv=None) -> int:
    parser = argparse.ArgumentParser(description="GCNet Table 1 statistics of the context blocks of a model.")
    _common(parser)
    parser.add_argument("--num-videos", type=int, default=16)
    parser.add_argument("--output", default=None, help="folder for context_stats.json (default OUTPUT_DIR)")
    parser.add_argument("--exact", action="store_true", help="JSD over all query positions (no sampling)")
    parser.add_argument("--num-queries", type=int, default=None,
                        help="query positions sampled per batch for the JSD (default: as many as fit a budget)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    from .runner import format_table, run_analysis

    try:
        cfg = _load(args)
        result = run_analysis(cfg, checkpoint=args.checkpoint, num_videos=args.num_videos, split=args.split,
                              output_dir=args.output, exact=args.exact, num_queries=args.num_queries,
                              batch_size=args.batch_size)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"wrote {result['path']}")
    return 0


def main_visualize(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Attention maps of NL / GC / SNL blocks over one video's frames.")
    _common(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--video", default=None, help="a video file")
    source.add_argument("--index", type=int, default=0, help="index of the video in the split's list")
    parser.add_argument("--block", default=None, help="one block name, e.g. res4.1.nonlocal (default: all)")
    parser.add_argument("--queries", type=int, default=4, help="query points per NL block")
    parser.add_argument("--width", type=int, default=1600, help="PNG width in pixels")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    from .runner import run_visualization

    try:
        cfg = _load(args)
        paths = run_visualization(cfg, output_dir=args.output, checkpoint=args.checkpoint, video=args.video,
                                  index=args.index, split=args.split, block=args.block, queries=args.queries,
                                  width_px=args.width)
    except (ValueError, KeyError, OSError, RuntimeError, IndexError) as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0
