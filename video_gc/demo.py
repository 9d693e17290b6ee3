"""The end-to-end demo behind ``make demo`` (tools/demo.py).

A sequence of named steps sharing one :class:`DemoContext`:

1. ``data``: write the synthetic dataset (video_gc.prep.synthetic) unless it is there;
2. ``train``: train the configs/demo model from scratch on the CPU;
3. ``test``: the multi-view test of the last checkpoint;
4. ``analysis``: train a narrow C2D with non-local blocks on the same data, then its
   context statistics and attention pictures (video_gc.analysis);
5. ``report``: per-class accuracy, grouped in the time-reversed class pairs.

A new step is a function ``step(ctx)`` added to :data:`DEMO_STEPS` (or passed
in ``steps``). The demo prints the path of ``test_metrics.json`` as its last line.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

from video_gc.config import load_config
from video_gc.engine.distributed import DistInfo
from video_gc.engine.logger import get_logger, setup_logging

DEFAULT_CFG = "configs/demo/SLOW_GC_DEMO.yaml"
# The analysis step's model: embedded-Gaussian non-local blocks, whose attention maps can be drawn.
NL_DEMO_CFG = "configs/demo/C2D_NL_DEMO.yaml"
TARGET_TOP1 = 90.0
# The synthetic videos: 100 per class (70 train / 15 val / 15 test), DEMO_VIDEO_SIZE, DEMO_VIDEO_FRAMES.
# Fewer videos per class and the model memorises the training clips instead of learning the motion.
VIDEOS_PER_CLASS = 100


@dataclass
class DemoContext:
    cfg: object
    output: str
    data_dir: str
    videos_per_class: int = VIDEOS_PER_CLASS
    fresh: bool = True
    dataset: dict | None = None
    train: dict | None = None
    metrics: dict | None = None
    timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def step_data(ctx: DemoContext) -> None:
    """Synthetic videos for cfg.MODEL.NUM_CLASSES classes; existing files are only checked."""
    from video_gc.prep.synthetic import DEMO_VIDEO_FRAMES, DEMO_VIDEO_SIZE, make_synthetic_dataset

    ctx.dataset = make_synthetic_dataset(ctx.data_dir, num_classes=ctx.cfg.MODEL.NUM_CLASSES,
                                         videos_per_class=ctx.videos_per_class, num_frames=DEMO_VIDEO_FRAMES,
                                         size=DEMO_VIDEO_SIZE, seed=0, workers=2)


def _train(cfg, fresh: bool) -> dict:
    """Train cfg in this process, in an emptied OUTPUT_DIR when ``fresh``."""
    from video_gc.engine.train import train

    if fresh:
        shutil.rmtree(cfg.OUTPUT_DIR, ignore_errors=True)
    setup_logging(cfg.OUTPUT_DIR)
    return train(cfg, DistInfo())


def step_train(ctx: DemoContext) -> None:
    ctx.train = _train(ctx.cfg, ctx.fresh)


def step_test(ctx: DemoContext) -> None:
    from video_gc.engine.test import test

    setup_logging(ctx.cfg.OUTPUT_DIR)
    ctx.metrics = test(ctx.cfg, DistInfo())


def step_context_analysis(ctx: DemoContext) -> None:
    """NL_DEMO_CFG trained on ctx.data_dir, then analysed; everything in ctx.output/analysis."""
    from video_gc.analysis.runner import analyse_run
    from video_gc.engine.checkpoint import list_checkpoints

    output = os.path.join(ctx.output, "analysis")
    cfg = load_config(NL_DEMO_CFG, ["DATA.PATH_TO_DATA_DIR", ctx.data_dir, "OUTPUT_DIR", output])
    _train(cfg, ctx.fresh)
    ctx.extra["context_analysis"] = analyse_run(cfg, list_checkpoints(output)[0], output)


def step_report(ctx: DemoContext) -> None:
    """Per-class accuracy; classes 2k and 2k+1 are the same motion played forwards and backwards."""
    per_class = ctx.metrics["per_class_accuracy"]
    names = list(per_class)
    lines = ["per-class video accuracy (each pair differs only in the direction of time):"]
    for first in range(0, len(names), 2):
        pair = names[first:first + 2]
        lines.append("  " + "   |   ".join(f"{name:<28} {per_class[name]:6.1f}%" for name in pair))
    top1 = ctx.metrics["top1"]
    verdict = "met" if top1 >= TARGET_TOP1 else "NOT met"
    lines.append(f"video top-1 {top1:.1f}% (target >= {TARGET_TOP1:.0f}%: {verdict}); "
                 f"clip top-1 {ctx.metrics['clip_top1']:.1f}%; "
                 f"steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in ctx.timings.items()))
    print("\n".join(lines), flush=True)


DEMO_STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("data", step_data),
    ("train", step_train),
    ("test", step_test),
    ("analysis", step_context_analysis),
    ("report", step_report),
]


def run_demo(cfg_file: str = DEFAULT_CFG, output: str = "output/demo", opts=(), *,
             videos_per_class: int = VIDEOS_PER_CLASS, fresh: bool = True, threads: int = 1,
             steps=None) -> DemoContext:
    """Run the demo steps; returns the context (metrics, timings, ...).

    ``threads``: torch's intra-op threads. One compute thread plus one data-loading worker fill
    two cores; more threads than free cores makes every step wait for the slowest thread.
    """
    import torch

    torch.set_num_threads(threads)
    data_dir = os.path.join(output, "data")
    cfg = load_config(cfg_file, ["DATA.PATH_TO_DATA_DIR", data_dir, "OUTPUT_DIR", os.path.join(output, "run"),
                                 *opts])
    setup_logging(None)
    ctx = DemoContext(cfg=cfg, output=output, data_dir=data_dir, videos_per_class=videos_per_class, fresh=fresh)
    start = time.time()
    for name, step in steps or DEMO_STEPS:
        t0 = time.time()
        get_logger().info("demo step '%s'", name)
        step(ctx)
        ctx.timings[name] = time.time() - t0
    ctx.timings["total"] = time.time() - start
    return ctx


def main_demo(argv=None) -> int:
    """tools/demo.py: run the demo; exit 0 when it reaches the target accuracy, 3 when it does not."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Synthetic data -> train -> 30-view test, on the CPU.")
    parser.add_argument("--cfg", default=DEFAULT_CFG)
    parser.add_argument("--output", default="output/demo", help="data in OUTPUT/data, the run in OUTPUT/run")
    parser.add_argument("--videos_per_class", type=int, default=VIDEOS_PER_CLASS)
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads (default 1, see run_demo)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run instead of starting afresh")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    from video_gc.engine.launch import user_errors
    from video_gc.prep import PrepError

    try:
        ctx = run_demo(args.cfg, args.output, args.opts, videos_per_class=args.videos_per_class,
                       fresh=not args.resume, threads=args.threads)
    except (*user_errors(), PrepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"demo finished in {ctx.timings['total']:.0f} s")
    print(ctx.metrics["metrics_path"])
    return 0 if ctx.metrics["top1"] >= TARGET_TOP1 else 3
