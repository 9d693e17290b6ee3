"""Memory layout and autocast helpers shared by the blocks, training and inference."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
from torch import nn


def no_autocast(x: torch.Tensor):
    """A context with autocast off on ``x``'s device (a no-op context when it is off already)."""
    device = x.device.type
    return torch.autocast(device_type=device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext()


def autocast_context(device: torch.device | str, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype`` on ``device`` (a no-op context for None)."""
    device = torch.device(device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_channels_last_3d(x: torch.Tensor) -> bool:
    """True for a 5-D tensor laid out [N, T, H, W, C] in memory (and not also contiguous)."""
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``x`` is in: channels_last_3d or contiguous."""
    return torch.channels_last_3d if is_channels_last_3d(x) else torch.contiguous_format


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Every 5-D parameter and buffer of ``model`` in channels_last_3d, in place.

    ``Module.to(memory_format=...)`` refuses models that also hold 4-D tensors
    (e.g. GC's LayerNorm over [P, 1, 1, 1]); this leaves those alone."""
    with torch.no_grad():
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for tensor in store.values():
                    if tensor is not None and tensor.dim() == 5:
                        tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return model
