"""What a context block costs: measured latency beside FLOPs and parameters
(``tools/benchmark_blocks.py``).

All variants are built from one base config plus overrides, prepared for the same
inference mode and timed round-robin (base, NL5, SNL5, ..., base, NL5, ...) on the
same clip; each reports its median and its overhead over the base model's median.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from video_gc.config import load_config
from video_gc.inference import prepare_for_inference
from video_gc.models import build_model
from video_gc.models.flops import count_flops

from .timing import interleaved_timings

_ALL_BLOCKS = "[[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]"
_RES34_ODD = "[[], [1, 3], [1, 3, 5], []]"
_RES345_ALL = "[[], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]"

# name -> config overrides on the Slow 8x8 R50 baseline (the configs/kinetics files' settings).
DEFAULT_VARIANTS: Dict[str, Tuple[str, ...]] = {
    "baseline": (),
    "NL5": ("NONLOCAL.LOCATION", "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]", "NONLOCAL.INSTANTIATION", "softmax"),
    "SNL5": ("CONTEXT.TYPE", "snl", "CONTEXT.LOCATION", _RES34_ODD),
    "GC5": ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", _RES34_ODD),
    "GC-all": ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", _RES345_ALL),
    "SE": ("CONTEXT.TYPE", "se", "CONTEXT.LOCATION", _ALL_BLOCKS),
    "CGD": ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", _ALL_BLOCKS),
    "NA": ("CONTEXT.TYPE", "na", "CONTEXT.LOCATION", _ALL_BLOCKS),
}


@dataclass
class BlockRow:
    """One variant: its cost and its overhead over the baseline (percent)."""

    name: str
    params: int
    gflops: float
    ms: float
    params_overhead_pct: float
    flops_overhead_pct: float
    latency_overhead_pct: float


def _pct(value: float, base: float) -> float:
    return round(100.0 * (value / base - 1.0), 2)


def block_overhead(
    base_config: str,
    *,
    variants: Optional[Dict[str, Sequence[str]]] = None,
    mode: str = "fp32",
    batch: int = 1,
    crop: int = 112,
    frames: Optional[int] = None,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    opts: Sequence[str] = (),
) -> List[BlockRow]:
    """Params, FLOPs (model-zoo convention, one clip) and median latency per variant."""
    variants = dict(variants or DEFAULT_VARIANTS)
    if "baseline" not in variants:
        raise ValueError("block_overhead: the variants need a 'baseline' entry")
    device_ = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    models, stats = {}, {}
    for name, overrides in variants.items():
        cfg = load_config(base_config, list(opts) + list(overrides))
        t = frames or cfg.DATA.NUM_FRAMES
        model = build_model(cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, (1, 3, t, crop, crop), conventions=("zoo",))["zoo"]
        stats[name] = (params, flops / 1e9)
        models[name] = prepare_for_inference(model, mode, device_)
    x = torch.randn(batch, 3, frames or cfg.DATA.NUM_FRAMES, crop, crop, generator=generator).to(device_)
    with torch.inference_mode():
        times = interleaved_timings({name: (lambda m: lambda: m(x))(m) for name, m in models.items()},
                                    repeats=repeats, warmup=warmup, device=device_)
    medians = {name: statistics.median(v) for name, v in times.items()}
    base_params, base_flops = stats["baseline"]
    return [
        BlockRow(name, params, round(gflops, 3), round(medians[name] * 1e3, 1), _pct(params, base_params),
                 _pct(gflops, base_flops), _pct(medians[name], medians["baseline"]))
        for name, (params, gflops) in stats.items()
    ]


def format_block_table(rows: Sequence[BlockRow]) -> str:
    """A markdown table of the rows."""
    lines = ["| model | params | params overhead | GFLOPs | FLOPs overhead | latency ms | latency overhead |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.params:,} | {r.params_overhead_pct:+.2f}% | {r.gflops:.2f} | "
                     f"{r.flops_overhead_pct:+.2f}% | {r.ms:.1f} | {r.latency_overhead_pct:+.1f}% |")
    return "\n".join(lines)


def rows_to_json(rows: Sequence[BlockRow]) -> dict:
    return {"models": [asdict(r) for r in rows]}
