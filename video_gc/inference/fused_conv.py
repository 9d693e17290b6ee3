"""The fused inference conv: ``act(conv3d(x) + bias [+ residual])``, BatchNorm folded in.

On the CPU it runs through oneDNN with ReLU and the residual add as post-ops, which
saves one full read and write of the activation per BN, ReLU and add, and with its
weights packed once into oneDNN's blocked layout instead of in every call; on other
devices it runs as conv + bias + add + ReLU, numerically the same. A context block
after a 1x1x1 conv can be absorbed into it (see ``video_gc.inference.absorb``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from video_gc.models.layout import memory_format

from .bn_fold import fold_batchnorm


class FusedConv3d(nn.Module):
    """``act(conv3d(x) + bias [+ residual])`` with act None or ReLU, for inference.

    Args:
        conv: the Conv3d to copy (zero padding, any stride / dilation / groups).
        bn: an eval-mode BatchNorm applied right after ``conv``, folded in (or None).
    The weights are frozen copies: training the source model does not change them.
    """

    def __init__(self, conv: nn.Conv3d, bn: Optional[nn.modules.batchnorm._BatchNorm] = None) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"FusedConv3d needs explicit zero padding, got {conv.padding!r} / {conv.padding_mode!r}")
        weight, bias = fold_batchnorm(conv, bn)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride = list(conv.stride)
        self.padding = list(conv.padding)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.relu = False
        self.context: Optional[nn.Module] = None
        self._packed: Optional[tuple] = None  # (input key, oneDNN-packed weight), see _packed_weight
        # Set by fuse_for_inference when no later op reads the residual: it may hold the output.
        self.residual_writable = False
        for name in ("context_weight", "context_bias", "context_key"):
            self.register_buffer(name, None, persistent=False)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, relu={self.relu}")

    def _onednn(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and x.dtype in (torch.float32, torch.bfloat16) and not (torch.is_grad_enabled() and x.requires_grad))

    def _output_shape(self, x: torch.Tensor) -> torch.Size:
        kernel = self.weight.shape[2:]
        spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                   for size, k, s, p, d in zip(x.shape[2:], kernel, self.stride, self.padding, self.dilation)]
        return torch.Size([x.shape[0], self.weight.shape[0], *spatial])

    def cast_(self, dtype: torch.dtype) -> "FusedConv3d":
        """Cast the folded weight and bias (only: an absorbed context block keeps its own)."""
        self.weight.data = self.weight.data.to(dtype)
        self.bias.data = self.bias.data.to(dtype)
        return self

    def absorb_context(self, block: nn.Module) -> None:
        """Compute ``block(conv(x))`` in this call (a 1x1x1 conv). ``block`` is an absorber
        (``video_gc.inference.absorb``): ``block(y)`` is the context block itself, and
        ``fold_pointwise_conv(x, weight, bias, key) -> (scale, shift)`` its effect as a
        per-sample channel affine of the conv's output, read from the conv's input, with
        ``key = position_key(weight)`` computed once here."""
        if not self.pointwise:
            raise ValueError("absorb_context needs a 1x1x1 conv with stride 1, no padding and one group")
        self.context = block
        # The block reads its statistics through the conv's weight in float32 (or wider), even
        # after cast_ to bf16; the per-position score vector over the input is computed once.
        w = self.weight.detach().reshape(self.weight.shape[0], -1)
        self.context_weight = w.to(torch.promote_types(w.dtype, torch.float32))
        self.context_bias = self.bias.detach().to(self.context_weight.dtype)
        self.context_key = self.context.position_key(self.context_weight)

    @property
    def pointwise(self) -> bool:
        """A 1x1x1 conv with stride 1, no padding and one group: a matmul over channels."""
        return (all(k == 1 for k in self.weight.shape[2:]) and all(s == 1 for s in self.stride)
                and not any(self.padding) and self.groups == 1)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type) and weight.dtype != torch.get_autocast_dtype(x.device.type):
            # Autocast does not know the oneDNN op; cast like it would for a conv.
            dtype = torch.get_autocast_dtype(x.device.type)
            weight, bias = weight.to(dtype), bias.to(dtype)
        x = x.to(weight.dtype)
        if self.context is None:
            return self._conv(x, weight, bias, residual, self.relu)
        if weight[0].numel() * (2 if x.shape[0] == 1 else 1) >= x[0, 0].numel():
            # Deep stages, with no more positions than input channels (res5 at 112 px; at batch 1,
            # where the fold's fixed cost weighs more, up to twice as many: res4): reading the
            # conv's output costs less than reading the statistics through the weight and
            # scaling a weight copy per sample (measured).
            return self._add_relu(self.context(self._conv(x, weight, bias, None, relu=False)), residual)
        scale, shift = self.context.fold_pointwise_conv(x, self.context_weight, self.context_bias, self.context_key)
        n = x.shape[0]
        if n == 1 or self._writes_into(residual, x, weight):
            # The affine folds into the conv, (W * s) x + (b * s + t): the add and ReLU after it
            # stay fused and the block costs no pass over the output. In a batch, sample i's
            # result is written into its slice of the residual (nothing else reads it later).
            for i in range(n):
                w_i, b_i = weight, bias
                if scale is not None:
                    s = scale[i].to(weight.dtype)
                    w_i, b_i = weight * s.view(-1, 1, 1, 1, 1), bias * s
                if shift is not None:
                    b_i = b_i + shift[i].to(weight.dtype)
                if n == 1:
                    return self._conv(x, w_i, b_i, residual, self.relu)
                out, target = self._conv(x[i:i + 1], w_i, b_i, residual[i:i + 1], self.relu), residual[i:i + 1]
                if out.data_ptr() != target.data_ptr():
                    target.copy_(out)  # not written in place after all: the result still lands there
            return residual
        view = (n, -1, 1, 1, 1)
        if scale is None and residual is not None:
            # A per-sample shift rides on the residual of the fused conv.
            return self._conv(x, weight, bias, residual + shift.to(residual.dtype).view(view), self.relu)
        # A batch shares one conv (and its packed weight); the per-sample affine follows in place.
        y = self._conv(x, weight, bias, None, relu=False)
        if scale is not None:
            y.mul_(scale.to(y.dtype).view(view))
        if shift is not None:
            y.add_(shift.to(y.dtype).view(view))
        return self._add_relu(y, residual)

    def _writes_into(self, residual: Optional[torch.Tensor], x: torch.Tensor, weight: torch.Tensor) -> bool:
        """True when oneDNN can write this conv's result into ``residual`` in place."""
        return (self.residual_writable and residual is not None and self._onednn(x)
                and residual.shape == self._output_shape(x) and residual.dtype == weight.dtype
                and residual.is_contiguous(memory_format=memory_format(x)))

    def _add_relu(self, y: torch.Tensor, residual: Optional[torch.Tensor]) -> torch.Tensor:
        """The residual add and ReLU that could not be fused, in place on the new tensor ``y``."""
        y = y if residual is None else y.add_(residual)
        return y.relu_() if self.relu else y

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """``self.weight`` in oneDNN's blocked layout for inputs shaped like ``x``, reordered
        once per input shape instead of inside every call (up to 2x faster for the weight-heavy
        res4 / res5 convs at batch 1; bit-identical results). The weights of a prepared model
        are frozen: an edit through ``.data`` is not seen; prepare the model again instead."""
        weight = self.weight
        key = (tuple(x.shape), x.dtype, weight.data_ptr(), 0 if weight.is_inference() else weight._version)
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def __getstate__(self):
        # A oneDNN-packed tensor can be neither pickled nor deep-copied; a copy packs its own.
        return {**super().__getstate__(), "_packed": None}

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: Optional[torch.Tensor],
              relu: bool) -> torch.Tensor:
        if self._onednn(x) and (residual is None or residual.shape == self._output_shape(x)):
            writable = self._writes_into(residual, x, weight)
            if weight is self.weight:
                weight = self._packed_weight(x)
            act = "relu" if relu else "none"
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, weight, bias, self.padding, self.stride, self.dilation, self.groups, act, [], "")
            if writable:
                # The result overwrites the residual: no new output buffer.
                return torch.ops.mkldnn._convolution_pointwise_.binary(
                    residual, x, weight, bias, self.padding, self.stride, self.dilation, self.groups,
                    "add", 1.0, "relu" if relu else None, [], "")
            residual = residual.to(weight.dtype).contiguous(memory_format=memory_format(x))
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, "relu" if relu else None, [], None)
        y = F.conv3d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y) if relu else y
