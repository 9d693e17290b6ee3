"""The analysis step of ``make demo`` (issue 7, section 4).

Trains a narrow C2D with embedded-Gaussian non-local blocks (configs/demo/C2D_NL_DEMO.yaml)
on the demo's synthetic data, then writes the GCNet Table 1 statistics (context_stats.json)
and the attention pictures of the first validation video next to the run.
"""

from __future__ import annotations

import os

NL_DEMO_CFG = "configs/demo/C2D_NL_DEMO.yaml"


def run_context_demo(data_dir: str, output: str, *, cfg_file: str = NL_DEMO_CFG, opts=(),
                     num_videos: int = 16, fresh: bool = True) -> dict:
    """Train (unless a finished checkpoint is there and not ``fresh``), analyse, draw.

    Returns the analysis result (with ``path``) plus ``pictures`` and ``checkpoint``.
    """
    import shutil

    from video_gc.config import load_config
    from video_gc.engine.checkpoint import list_checkpoints
    from video_gc.engine.distributed import DistInfo
    from video_gc.engine.logger import setup_logging
    from video_gc.engine.train import train

    from .runner import format_table, run_analysis, run_visualization

    cfg = load_config(cfg_file, ["DATA.PATH_TO_DATA_DIR", data_dir, "OUTPUT_DIR", output, *opts])
    if fresh:
        shutil.rmtree(output, ignore_errors=True)
    setup_logging(output)
    train(cfg, DistInfo())
    checkpoint = list_checkpoints(output)[0]
    result = run_analysis(cfg, checkpoint=checkpoint, num_videos=num_videos, split="val", output_dir=output)
    print(format_table(result), flush=True)
    pictures = run_visualization(cfg, output_dir=os.path.join(output, "pictures"), checkpoint=checkpoint,
                                 index=0, split="val", queries=4)
    print("attention pictures: " + ", ".join(pictures), flush=True)
    return {**result, "pictures": pictures, "checkpoint": checkpoint}


def step_context_analysis(ctx) -> None:
    """A step for video_gc.engine.demo.DEMO_STEPS: uses ctx.data_dir, writes ctx.output/analysis."""
    ctx.extra["context_analysis"] = run_context_demo(ctx.data_dir, os.path.join(ctx.output, "analysis"),
                                                     fresh=ctx.fresh)
