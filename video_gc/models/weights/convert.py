"""Offline conversion of any supported checkpoint into a video_gc or PyTorchVideo checkpoint."""

from __future__ import annotations

import os

from video_gc.utils.io import atomic_save

from .loader import import_weights
from .pytorchvideo_io import export_pytorchvideo, pytorchvideo_builder
from .report import LoadReport

TARGETS = ("video_gc", "pytorchvideo")


def convert_checkpoint(
    cfg,
    input_path: str,
    output_path: str,
    *,
    fmt: str = "auto",
    inflate_mode: str = "average",
    to: str = "video_gc",
    strict: bool = False,
) -> LoadReport:
    """Load ``input_path`` into ``build_model(cfg)`` and save it as ``{"model_state", "meta", "cfg"}``.

    ``to="video_gc"``: our names, loadable with ``build_model(cfg).load_state_dict``.
    ``to="pytorchvideo"``: PyTorchVideo's ``create_resnet`` names (``slow_r50`` /
    ``c2d_r50`` layout), loadable by that model's ``load_state_dict``.
    """
    from video_gc.models import build_model

    if to not in TARGETS:
        raise ValueError(f"--to: invalid value {to!r}; allowed values: {', '.join(TARGETS)}")
    builder = pytorchvideo_builder(cfg.MODEL.ARCH) if to == "pytorchvideo" else None  # refuses before any work
    model = build_model(cfg)
    report = import_weights(model, input_path, fmt=fmt, inflate=True, inflate_mode=inflate_mode, strict=strict)
    state = model.state_dict()
    if to == "pytorchvideo":
        state = export_pytorchvideo(state, arch=cfg.MODEL.ARCH)
    meta = {
        "converted_from": os.path.abspath(input_path),
        "source_format": report.source_format,
        "inflate_mode": inflate_mode if report.inflated else None,
        "layout": to,
        "arch": cfg.MODEL.ARCH,
        "report": report.summary(),
    }
    if to == "pytorchvideo":
        meta["pytorchvideo_builder"] = builder
    atomic_save({"model_state": state, "meta": meta, "cfg": cfg.dump()}, output_path)
    return report
