"""Model-zoo statistics: parameters and FLOPs per config, beside the papers' figures.

Used by ``tools/model_stats.py``. FLOPs are for one view of DATA.NUM_FRAMES
frames at a square crop (DATA.TRAIN_CROP_SIZE unless given); a test pass costs
``views`` = NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS of them.
"""

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from video_gc.config import load_config
from video_gc.models import build_model
from video_gc.models.flops import count_flops

# Published (params in M, GFLOPs per view, source), keyed by "<folder>/<config name>".
# GCNet Table 5 (Slow-only R50, Kinetics-400, 8x224x224). The CGD paper's Table 3 gives
# ResNet-50 C2D at 32x224x224 with ImageNet's 1000-class parameter count, and one NL block
# in res4; its CGD row is the baseline + 0.02M params and + 0.095M MACs.
PAPER_FIGURES = {
    "kinetics/SLOW_8x8_R50": (32.45, 39.29, "GCNet T5"),
    "kinetics/SLOW_8x8_R50_NL": (39.81, 59.60, "GCNet T5"),
    "kinetics/SLOW_8x8_R50_SNL": (36.13, 39.32, "GCNet T5"),
    "kinetics/SLOW_8x8_R50_GC5": (34.30, 39.31, "GCNet T5"),
    "kinetics/SLOW_8x8_R50_GC": (42.45, 39.35, "GCNet T5"),
}
for _dataset in ("mini_kinetics", "ucf101"):
    PAPER_FIGURES[f"{_dataset}/C2D_32x2_R50"] = (25.56, 17.87, "CGD T3")
    PAPER_FIGURES[f"{_dataset}/C2D_32x2_R50_NL"] = (27.66, 19.67, "CGD T3")
    PAPER_FIGURES[f"{_dataset}/C2D_32x2_R50_CGD"] = (25.58, 17.87, "CGD T3")


@dataclass
class ModelStats:
    """One row of the model-zoo table."""

    name: str
    config: str
    arch: str
    context: str
    params: int
    gflops: float
    views: int
    total_gflops: float
    num_frames: int
    crop: int
    num_classes: int
    convention: str
    paper_params_m: Optional[float] = None
    paper_gflops: Optional[float] = None
    paper_source: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def config_key(path: str) -> str:
    """"<parent folder>/<file stem>", the key of PAPER_FIGURES."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}"


def _context_label(cfg) -> str:
    parts = []
    nl = sum(len(i) for stage in cfg.NONLOCAL.LOCATION for i in stage)
    if nl:
        parts.append(f"{nl} NL")
    if cfg.CONTEXT.TYPE != "none":
        n = sum(len(stage) for stage in cfg.CONTEXT.LOCATION)
        parts.append(f"{n} {cfg.CONTEXT.TYPE.upper()}")
    return " + ".join(parts) or "-"


def model_stats(
    config: str, opts: Sequence[str] = (), crop: Optional[int] = None, convention: str = "zoo"
) -> ModelStats:
    """Params and FLOPs of the model a config file describes (built on the CPU)."""
    cfg = load_config(config, list(opts))
    crop = crop or cfg.DATA.TRAIN_CROP_SIZE
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, (1, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, crop, crop), (convention,))
    gflops = flops[convention] / 1e9
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    paper = PAPER_FIGURES.get(config_key(config), (None, None, None))
    return ModelStats(
        name=Path(config).stem, config=str(config), arch=cfg.MODEL.ARCH, context=_context_label(cfg),
        params=params, gflops=gflops, views=views, total_gflops=gflops * views,
        num_frames=cfg.DATA.NUM_FRAMES, crop=crop, num_classes=cfg.MODEL.NUM_CLASSES, convention=convention,
        paper_params_m=paper[0], paper_gflops=paper[1], paper_source=paper[2],
    )


def find_configs(path: str) -> List[str]:
    """A YAML file, or every YAML file under a folder (sorted)."""
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).rglob("*.yaml"))
        if not found:
            raise FileNotFoundError(f"no .yaml config files under {path}")
        return found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    return [path]


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Iterable[ModelStats]) -> str:
    """A GCNet-Table-5-style text table (ours beside the paper's)."""
    rows = list(rows)
    header = ("config", "arch", "blocks", "classes", "input", "params", "GFLOPs/view", "views",
              "total GFLOPs", "paper params", "paper GFLOPs", "source")
    lines = [header]
    for r in rows:
        lines.append((
            config_key(r.config), r.arch, r.context, str(r.num_classes), f"{r.num_frames}x{r.crop}^2",
            f"{r.params:,}", f"{r.gflops:.3f}", str(r.views), f"{r.total_gflops:.1f}",
            _fmt(r.paper_params_m, ".2f") + ("M" if r.paper_params_m else ""), _fmt(r.paper_gflops, ".2f"),
            r.paper_source or "-",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) if i < 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    conv = rows[0].convention if rows else "zoo"
    note = ("FLOPs: multiply-adds of convs, matmuls and the fc (model-zoo convention)" if conv == "zoo"
            else "FLOPs: fvcore default handles (convs, matmuls, fc, BN, LayerNorm)")
    return "\n".join(out + ["", note + "; one view = the input column; total = views x GFLOPs/view.",
                            "Paper GFLOPs are as printed (GCNet's do not follow a standard count: compare deltas)."])
