"""Export a trained model to ONNX or TorchScript for deployment (``tools/export_model.py``).

The exported graph is the plain eval model: the fused inference rewrite
(``video_gc.inference``) runs oneDNN-specific convolutions that neither ONNX nor a
trace outside this process can represent. Every export is checked before it is
kept: the file is reloaded (ONNX Runtime on the CPU, ``torch.jit.load``) and its
logits must match PyTorch's on the same clip within a tolerance, at batch sizes 1
and 3 for a dynamic batch. The file is written under a temporary name and renamed
only after the check passes, next to a JSON sidecar (``FILE.json``) that records
the input a deployer must feed and what was measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from video_gc.data.lists import DataListError, read_classids
from video_gc.engine.common import load_test_weights, warn_if_preprocessing_differs
from video_gc.engine.logger import get_logger
from video_gc.models import build_model
from video_gc.utils.io import atomic_write_text

logger = get_logger()

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
TOLERANCE = 1e-4
# A dynamic batch is traced at 2 (a traced 1 could be baked in as a broadcast) and checked at 1 and 3.
TRACE_BATCH = 2
DYNAMIC_CHECK_BATCHES = (1, 3)
INPUT_NAME, OUTPUT_NAME = "clip", "logits"
class ExportError(RuntimeError):
    """An export that cannot be kept; the message names the problem."""


@dataclass
class ExportResult:
    path: str
    sidecar_path: str
    max_abs_diff: dict  # batch size -> max |exported - PyTorch| over the logits
    sidecar: dict


def input_shape(cfg, batch: Optional[int]) -> list:
    """[N, C, T, crop, crop] of the model's input; N is None for a dynamic batch."""
    crop = cfg.DATA.TEST_CROP_SIZE
    return [batch, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, crop, crop]


def _clip(shape: list, batch: int, seed: int) -> torch.Tensor:
    # Normalised clips are roughly unit Gaussian: the same range the check covers.
    return torch.randn([batch] + shape[1:], generator=torch.Generator().manual_seed(seed))


@contextmanager
def _quiet_tracing():
    """torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated (they still work),
    and the tracer that shape-dependent Python branches become constants (the check at other batch
    sizes covers that)."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        yield


def _export_onnx(model: nn.Module, example: torch.Tensor, path: str, opset: int, dynamic: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    try:
        with _quiet_tracing():
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
    except torch.onnx.errors.UnsupportedOperatorError as err:
        raise ExportError(f"ONNX export failed (unsupported operator): {err}") from err
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as err:
        raise ExportError(f"ONNX export failed: {err}") from err


def onnx_runner(path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(path, full_check=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the process's thread budget, not every core
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnx and onnxruntime raise their own exception types
        raise ExportError(f"the exported ONNX model does not load in ONNX Runtime: {err}") from err
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        with _quiet_tracing():
            traced = torch.jit.trace(model, (example,), check_trace=False)
            torch.jit.save(traced, path)
    except RuntimeError as err:
        raise ExportError(f"TorchScript trace failed: {err}") from err


def _torchscript_runner(path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        with _quiet_tracing():
            loaded = torch.jit.load(path, map_location="cpu")
    except RuntimeError as err:
        raise ExportError(f"the saved TorchScript module does not load: {err}") from err
    return loaded


def _compare(model: nn.Module, run: Callable, shape: list, batches: tuple, tolerance: float, fmt: str) -> dict:
    """Max |exported - PyTorch| per batch size; ExportError when a run fails or exceeds ``tolerance``."""
    diffs = {}
    for batch in batches:
        x = _clip(shape, batch, seed=batch)
        with torch.no_grad():
            expected = model(x)
            try:
                got = run(x)
            except Exception as err:  # whatever the runtime raises: the export is unusable at this size
                raise ExportError(f"the exported {fmt} model fails at batch size {batch}: {err}") from err
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(f"the exported {fmt} model gives logits of shape {tuple(got.shape)} at batch size "
                              f"{batch}; PyTorch gives {tuple(expected.shape)}")
        diff = float((got.float() - expected).abs().max())
        if not np.isfinite(diff) or diff > tolerance:
            # The logits' size tells float32 rounding (relative ~1e-6) from a wrong graph.
            raise ExportError(f"the exported {fmt} model differs from PyTorch at batch size {batch}: max abs "
                              f"difference {diff:.3g} > tolerance {tolerance:g} (PyTorch logits up to "
                              f"{float(expected.abs().max()):.3g})")
        diffs[batch] = diff
    return diffs


def known_class_names(cfg) -> Optional[list]:
    """DATA.CLASS_NAMES_FILE under DATA.PATH_TO_DATA_DIR when it lists MODEL.NUM_CLASSES names, else None."""
    if not cfg.DATA.PATH_TO_DATA_DIR:
        return None
    try:
        names = read_classids(os.path.join(cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.CLASS_NAMES_FILE))
    except DataListError as err:
        logger.warning("class names left out of the sidecar: %s", err)
        return None
    if len(names) != cfg.MODEL.NUM_CLASSES:
        logger.warning("class names left out of the sidecar: %d names for MODEL.NUM_CLASSES %d",
                       len(names), cfg.MODEL.NUM_CLASSES)
        return None
    return names


def _sidecar(cfg, fmt: str, shape: list, opset: Optional[int], tolerance: float, diffs: dict) -> dict:
    return {
        "format": fmt,
        "opset": opset,
        "torch_version": torch.__version__,
        "input": {"name": INPUT_NAME, "shape": shape, "layout": "NCTHW", "dtype": "float32",
                  "dynamic_batch": shape[0] is None},
        "output": {"name": OUTPUT_NAME, "shape": [shape[0], cfg.MODEL.NUM_CLASSES], "activation": "none (logits)"},
        "preprocessing": {
            "frames": cfg.DATA.NUM_FRAMES,
            "sampling_rate": cfg.DATA.SAMPLING_RATE,
            "target_fps": cfg.DATA.TARGET_FPS,
            "decoding_short_side": cfg.DATA.DECODING_SHORT_SIZE,
            "short_side_resize": cfg.DATA.TEST_CROP_SIZE,
            "test_crop": cfg.DATA.TEST_CROP_SIZE,
            "channel_order": "BGR" if cfg.DATA.REVERSE_INPUT_CHANNEL else "RGB",
            "normalize": "(pixel / 255 - mean) / std",
            "mean": list(cfg.DATA.MEAN),
            "std": list(cfg.DATA.STD),
        },
        "model": {"arch": cfg.MODEL.ARCH, "depth": cfg.RESNET.DEPTH, "context_type": cfg.CONTEXT.TYPE},
        "num_classes": cfg.MODEL.NUM_CLASSES,
        "class_names": known_class_names(cfg),
        "check": {"runtime": "onnxruntime CPUExecutionProvider" if fmt == "onnx" else "torch.jit.load",
                  "tolerance": tolerance, "max_abs_diff": {str(b): d for b, d in diffs.items()}},
    }


def export_model(model: nn.Module, cfg, output: str, fmt: str, batch: Optional[int] = None,
                 opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, extra: Optional[dict] = None) -> ExportResult:
    """Export the eval ``model`` (built from ``cfg``) to ``output`` and its sidecar; ``batch`` None is dynamic.

    ``extra`` is merged into the sidecar. Nothing is left at ``output`` when the export fails."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; allowed values: {', '.join(FORMATS)}")
    if batch is not None and batch < 1:
        raise ExportError(f"batch size must be positive, got {batch}")
    model.eval()
    shape = input_shape(cfg, batch)
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = f"{output}.partial"
    try:
        example = _clip(shape, batch or TRACE_BATCH, seed=0)
        if fmt == "onnx":
            _export_onnx(model, example, tmp, opset, dynamic=batch is None)
            run = onnx_runner(tmp)
        else:
            _export_torchscript(model, example, tmp)
            run = _torchscript_runner(tmp)
        diffs = _compare(model, run, shape, DYNAMIC_CHECK_BATCHES if batch is None else (batch,), tolerance, fmt)
        sidecar = {**_sidecar(cfg, fmt, shape, opset if fmt == "onnx" else None, tolerance, diffs), **(extra or {})}
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    sidecar_path = f"{output}.json"
    atomic_write_text(sidecar_path, json.dumps(sidecar, indent=1) + "\n")
    return ExportResult(output, sidecar_path, diffs, sidecar)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_checkpoint(cfg, checkpoint: str, output: str, fmt: str, batch: Optional[int] = None,
                      opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE) -> ExportResult:
    """Build ``cfg``'s model, load ``checkpoint`` strictly (any format TEST.CHECKPOINT_TYPE reads), export it."""
    model = build_model(cfg)
    load_test_weights(cfg, model, checkpoint)
    warn_if_preprocessing_differs(cfg, checkpoint, "the sidecar describes --cfg's; pass the training config with --cfg")
    extra = {"checkpoint": {"path": os.path.abspath(checkpoint), "sha256": file_sha256(checkpoint)}}
    return export_model(model, cfg, output, fmt, batch=batch, opset=opset, tolerance=tolerance, extra=extra)
