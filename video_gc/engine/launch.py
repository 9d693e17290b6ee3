"""Entry point of tools/run_net.py: parse arguments, load and validate the config."""

from __future__ import annotations

import argparse
import sys

from video_gc.config import ConfigError, load_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and test video_gc models.")
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="path to a YAML config")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.cfg_file, args.opts)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(cfg.dump())
    return 0
