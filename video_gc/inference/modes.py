"""Fast inference: one call turns a trained model into the fastest exact (or
near-exact) forward pass for a device.

    from video_gc.inference import prepare_for_inference
    fast = prepare_for_inference(model, "best", device)   # model itself is untouched
    with torch.inference_mode():
        logits = fast(clips)                               # float32 logits [N, K]

Modes (registered in ``video_gc.registry.INFERENCE_MODES``; TEST.INFERENCE_MODE picks one
for the test loop):

- ``reference``: the model as built, eval mode, fp32, contiguous layout.
- ``fused``: BatchNorm folded into the convs, ReLU and residual add fused into them,
  context blocks after a 1x1x1 conv absorbed by it (``video_gc.inference.rewrite``), the input
  and weights left in the contiguous layout. Logits equal the reference up to float
  rounding. (On a CPU oneDNN's packed weights make every conv after the stem return
  channels_last_3d anyway, so there it runs like ``channels_last``.)
- ``channels_last``: ``fused`` with input and weights in the channels_last_3d memory
  format (oneDNN's native layout for 3D convs).
- ``fp32`` (the default): ``fused`` in the layout that is faster on the device:
  channels_last_3d on a CPU with oneDNN, contiguous on CUDA (cuDNN's fp32 3D convs; not
  measured here).
- ``bf16``: ``channels_last`` under bfloat16 autocast (CPU with native bf16 or CUDA).
- ``fp16``: ``channels_last`` under float16 autocast (CUDA only).
- ``compile``: the model as built, channels_last_3d, in ``torch.compile`` (Inductor with
  frozen weights, which folds BN and fuses the convs itself). The first call compiles.
- ``best``: ``bf16`` on a CPU with native bf16 instructions, ``fp16`` on CUDA,
  ``fp32`` otherwise.

Every mode returns float32 logits, whatever dtype the model ran in.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from video_gc.models.layout import autocast_context, to_channels_last_3d
from video_gc.registry import INFERENCE_MODES

from .fused_conv import FusedConv3d
from .rewrite import fuse_for_inference

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModeRecipe:
    """What a mode name asks for. ``layout``: ``contiguous``, ``channels_last``, or
    ``device`` (channels_last_3d on a CPU with oneDNN, contiguous elsewhere)."""

    fuse: bool = True
    layout: str = "contiguous"
    dtype: Optional[torch.dtype] = None
    compile: bool = False
    cuda_only: bool = False


INFERENCE_MODES.register("reference", ModeRecipe(fuse=False))
INFERENCE_MODES.register("fused", ModeRecipe())
INFERENCE_MODES.register("channels_last", ModeRecipe(layout="channels_last"))
INFERENCE_MODES.register("fp32", ModeRecipe(layout="device"))
INFERENCE_MODES.register("bf16", ModeRecipe(layout="channels_last", dtype=torch.bfloat16))
INFERENCE_MODES.register("fp16", ModeRecipe(layout="channels_last", dtype=torch.float16, cuda_only=True))
# Inductor folds BN and fuses convs itself (with frozen weights); it gets the plain model.
INFERENCE_MODES.register("compile", ModeRecipe(fuse=False, layout="channels_last", compile=True))
INFERENCE_MODES.register("best", None)  # fp16 / bf16 / fp32 by device: see resolve_mode


@dataclass(frozen=True)
class InferenceSettings:
    """What a mode turns on for one device: fusion, layout, autocast dtype, torch.compile."""

    mode: str
    fuse: bool
    channels_last: bool
    dtype: Optional[torch.dtype]
    compile: bool


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return torch.backends.mkldnn.is_available() and any(
        callable(getattr(cpu, name, None)) and getattr(cpu, name)() for name in checks)


def resolve_mode(mode: str, device: torch.device | str) -> InferenceSettings:
    """The settings ``mode`` means on ``device``; a clear error for a mode the device cannot run."""
    device = torch.device(device)
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference mode {mode!r}; allowed values: {', '.join(INFERENCE_MODES.names())}")
    if mode == "best":
        if device.type == "cuda":
            mode = "fp16"
        elif device.type == "cpu" and cpu_has_native_bf16():
            mode = "bf16"
        else:
            mode = "fp32"
    recipe = INFERENCE_MODES[mode]
    if recipe.cuda_only and device.type != "cuda":
        raise ValueError(f"inference mode {mode} needs a CUDA device, got {device}; use bf16 on CPU")
    onednn = device.type == "cpu" and torch.backends.mkldnn.is_available()
    return InferenceSettings(
        mode=mode, fuse=recipe.fuse, dtype=recipe.dtype, compile=recipe.compile,
        channels_last=recipe.layout == "channels_last" or (recipe.layout == "device" and onednn),
    )


class InferenceModel(nn.Module):
    """A prepared model: moves the input to the device and layout, runs it under
    the mode's autocast, returns float32 logits. Build it with :func:`prepare_for_inference`."""

    def __init__(self, model: nn.Module, settings: InferenceSettings, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last_3d if self.settings.channels_last and x.dim() == 5 else torch.contiguous_format
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=layout)
        with autocast_context(self.device, self.settings.dtype):
            return self.model(x).float()


def _compile(model: nn.Module) -> nn.Module:
    if not hasattr(torch, "compile"):
        raise RuntimeError("inference mode compile needs torch.compile (PyTorch >= 2.0)")
    return torch.compile(model, options={"freezing": True})


def prepare_for_inference(model: nn.Module, mode: str = "fp32", device: torch.device | str | None = None) -> InferenceModel:
    """An inference-only copy of ``model`` for ``mode`` on ``device`` (default: the model's).

    ``model`` is left as it was (its training mode, layout and weights). Call the
    result inside ``torch.inference_mode()``. Raises ValueError for an unknown mode
    or one the device cannot run.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    settings = resolve_mode(mode, device)
    net = fuse_for_inference(model) if settings.fuse else _eval_copy(model)
    net = net.to(device)
    if settings.channels_last:
        net = to_channels_last_3d(net)
    if settings.dtype is not None:
        # Cast the fused convs' weights once, not in every call (autocast does not cache
        # weights that need no gradient).
        for module in net.modules():
            if isinstance(module, FusedConv3d):
                module.cast_(settings.dtype)
    if settings.compile:
        net = _compile(net)
    logger.debug("inference mode %s -> %s on %s", mode, settings, device)
    return InferenceModel(net, settings, device)


def _eval_copy(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
