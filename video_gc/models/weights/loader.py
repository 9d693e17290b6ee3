"""Copying a checkpoint's weights into a video_gc model, inflating 2D kernels.

Rules, key by key over the model's state dict:

- same shape: copied (BN running statistics included);
- a 2D kernel (or a 3D one with t = 1) for a 3D conv: inflated (``average`` or
  ``center``) when inflation is on, an error naming the file when it is off;
- the fc when the class count differs, or absent: left as the fresh model made
  it (``new_head``);
- context blocks (NL, GC, SNL, SE, NA, CGD): loaded only from a checkpoint that
  has them; an image checkpoint never writes them, they keep their own init;
- Caffe2 BN layers with only scale and bias (frozen affine BN): running mean 0
  and running variance 1 - eps, so the BN computes x * scale + bias exactly;
- anything else is reported (missing, unused, shape mismatch) and fails in
  strict mode. A checkpoint where nothing beyond the fc matches always fails.

Strict mode still allows a new head and context blocks at their init (fine-tuning
needs both). Scoring a test set needs neither: ``require_head`` and
``require_context`` refuse them.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from video_gc.utils.io import CheckpointError

from . import names
from .formats import SourceWeights, load_source
from .inflate import INFLATE_MODES, can_inflate, inflate_kernel
from .report import LoadReport

logger = logging.getLogger(__name__)

_BN_STATS = ("running_mean", "running_var")


def _bn_eps(model: nn.Module) -> dict[str, float]:
    return {
        name: module.eps
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }


def _fill_affine_bn(source: SourceWeights, model_eps: dict[str, float], report: LoadReport) -> None:
    """Give Caffe2 affine-only BNs statistics that make the BN equal to the affine op."""
    for prefix, eps in model_eps.items():
        has_affine = f"{prefix}.weight" in source.tensors
        has_stats = any(f"{prefix}.{s}" in source.tensors for s in _BN_STATS)
        if source.format == "caffe2" and has_affine and not has_stats:
            scale = source.tensors[f"{prefix}.weight"]
            source.tensors[f"{prefix}.running_mean"] = torch.zeros_like(scale)
            # (x - 0) / sqrt((1 - eps) + eps) * scale + bias == x * scale + bias
            source.tensors[f"{prefix}.running_var"] = torch.full_like(scale, 1.0 - eps)
            report.affine_bn.append(prefix)


def apply_weights(
    model: nn.Module,
    source: SourceWeights,
    *,
    inflate: bool = True,
    inflate_mode: str = "average",
    strict: bool = False,
    require_head: bool = False,
    require_context: bool = False,
) -> LoadReport:
    """Copy ``source`` into ``model`` in place and return what happened.

    ``strict``: fail on a partial match. ``require_head``: fail unless the
    checkpoint's classifier fits the model (a new, random head would be scored
    otherwise). ``require_context``: fail unless the checkpoint holds the model's
    context blocks. Nothing in the model changes when any check fails.
    """
    if inflate_mode not in INFLATE_MODES:
        raise ValueError(f"inflate mode {inflate_mode!r}; allowed values: {', '.join(INFLATE_MODES)}")
    report = LoadReport(path=source.path, source_format=source.format, inflate_mode=inflate_mode)
    _fill_affine_bn(source, _bn_eps(model), report)
    target = model.state_dict()
    # 2D kernels mark an image checkpoint; context tensors do not count (GC's LayerNorm weight is 4-D).
    image_checkpoint = any(t.dim() == 4 for k, t in source.tensors.items() if not names.is_context_key(k))
    has_context = any(names.is_context_key(k) for k in source.tensors)
    updates, used = {}, set()
    not_inflated = []
    for key, dest in target.items():
        if key.endswith("num_batches_tracked"):
            if key in source.tensors:
                updates[key] = source.tensors[key]
                used.add(key)
            continue
        src = source.tensors.get(key)
        if names.is_context_key(key) and (image_checkpoint or not has_context):
            report.context_kept.append(key)
            continue
        if names.is_head_key(key) and (src is None or src.shape != dest.shape):
            if src is not None:
                used.add(key)
            report.new_head.append((key, tuple(src.shape) if src is not None else None, tuple(dest.shape)))
            continue
        if src is None:
            report.missing.append(key)
            continue
        used.add(key)
        if src.shape == dest.shape:
            updates[key] = src
            report.loaded.append(key)
        elif can_inflate(src.shape, dest.shape):
            if not inflate:
                not_inflated.append((key, tuple(src.shape), tuple(dest.shape)))
                continue
            updates[key] = inflate_kernel(src, dest.shape[2], inflate_mode)
            report.inflated.append((key, tuple(src.shape), tuple(dest.shape)))
        else:
            report.mismatched.append((key, tuple(src.shape), tuple(dest.shape)))
    report.unused = list(source.unused) + [source.origin.get(k, k) for k in source.tensors if k not in used]

    if not_inflated:
        key, s, t = not_inflated[0]
        raise CheckpointError(
            f"checkpoint {source.path} holds 2D kernels ({len(not_inflated)} of them, e.g. {key} "
            f"{list(s)} for the model's {list(t)}); set TRAIN.CHECKPOINT_INFLATE True to inflate them into 3D "
            f"(a 2D checkpoint is a starting point for training, not a video model to test)"
        )
    if all(names.is_head_key(k) for k in report.loaded + [k for k, _, _ in report.inflated]):
        problems = report.problems()
        sample = "; ".join(sorted(problems, key=lambda line: not line.startswith("shape"))[:4])
        raise CheckpointError(
            f"nothing in checkpoint {source.path} ({source.format} layout, {len(source.tensors) + len(source.unused)} "
            f"tensors) matches this model: it is for another architecture ({len(report.mismatched)} shape "
            f"mismatches, {len(report.missing)} model keys missing, {len(report.unused)} checkpoint keys unused). "
            f"First problems: {sample}"
        )
    if strict and report.partial:
        raise CheckpointError(
            f"strict loading of {source.path} failed: partial match ({len(report.problems())} problems):\n  "
            + "\n  ".join(report.problems())
        )
    if require_head and report.new_head:
        key, src, dest = report.new_head[0]
        found = f"checkpoint {list(src)}" if src is not None else "no classifier in the checkpoint"
        raise CheckpointError(
            f"checkpoint {source.path} has no classifier for this model: {key}: {found}, model {list(dest)} "
            f"(MODEL.NUM_CLASSES must match the class count the checkpoint was trained with)"
        )
    if require_context and report.context_kept:
        raise CheckpointError(
            f"checkpoint {source.path} has none of this model's context-block weights ({len(report.context_kept)} "
            f"tensors, e.g. {report.context_kept[0]}); they would keep their initial values. Check CONTEXT.* and "
            f"NONLOCAL.* against the config the checkpoint was trained with"
        )
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value.to(dtype=target[key].dtype))
    return report


def import_weights(
    model: nn.Module,
    path: str,
    *,
    fmt: str = "auto",
    inflate: bool = True,
    inflate_mode: str = "average",
    strict: bool = False,
    require_head: bool = False,
    require_context: bool = False,
) -> LoadReport:
    """Load the checkpoint at ``path`` (any supported layout) into ``model``.

    ``fmt``: auto | pytorch | torchvision | caffe2 | pyslowfast | pytorchvideo | video_gc.
    ``strict`` / ``require_head`` / ``require_context``: see :func:`apply_weights`.
    Nothing in the model changes unless the whole load succeeds.
    """
    source = load_source(path, fmt)
    return apply_weights(
        model, source, inflate=inflate, inflate_mode=inflate_mode, strict=strict,
        require_head=require_head, require_context=require_context,
    )


def load_pretrained(model: nn.Module, cfg) -> LoadReport | None:
    """Fine-tuning start: load TRAIN.CHECKPOINT_FILE_PATH into ``model`` as the config says.

    Reads TRAIN.CHECKPOINT_TYPE, CHECKPOINT_INFLATE, CHECKPOINT_INFLATE_MODE and
    CHECKPOINT_STRICT; logs the report and returns it (None when no path is set).
    """
    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    if not path:
        return None
    report = import_weights(
        model,
        path,
        fmt=cfg.TRAIN.CHECKPOINT_TYPE,
        inflate=cfg.TRAIN.CHECKPOINT_INFLATE,
        inflate_mode=cfg.TRAIN.CHECKPOINT_INFLATE_MODE,
        strict=cfg.TRAIN.CHECKPOINT_STRICT,
    )
    logger.info("%s", report.format())
    if report.partial:
        logger.warning(
            "partial match loading %s: %d problems (listed above); set TRAIN.CHECKPOINT_STRICT True to make "
            "this an error", path, len(report.problems()),
        )
    return report
