"""Inference-only forms of the context blocks, created by the graph rewrite.

The paper modules in ``video_gc.models.blocks`` stay as their papers write them;
the rewrite wraps them here where a cheaper exact form exists:

- A GCNet-family or NA block right after a 1x1x1 conv (CONTEXT.POSITION
  after1x1) is absorbed by that conv. Its statistics are linear in the conv's
  output y = W h + b, so they are read from the conv's input h (a quarter of y's
  channels in a bottleneck), and its fusion becomes a per-sample channel affine
  of the conv: ``fold_pointwise_conv(h, W, b, key) -> (scale, shift)``, with
  ``key = position_key(W)`` computed once per conv.
- A CGD gate takes over the eval BatchNorm and ReLU that follow it, applied in
  place with its gate (``GateEpilogue``).

Every form equals the block it wraps up to float rounding.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from video_gc.models.blocks import CompactGlobalDescriptor, GlobalContextBlock, NormalizationAttention
from video_gc.models.blocks.normalization_attention import weighted_sum
from video_gc.models.layout import no_autocast


class _Absorbed(nn.Module):
    """A block a preceding 1x1x1 conv can absorb; called on the conv's output, it is the block."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.block(y)


class AbsorbedGlobalContext(_Absorbed):
    """A GCNet-family block (GC, SNL, SE, ablations) read through the 1x1x1 conv before it."""

    def position_key(self, weight: torch.Tensor) -> Optional[torch.Tensor]:
        """W_k W [C_in] for the conv's weight W [C, C_in] (att pooling; None for avg):
        the att logit of y = W h + b at a position is <W_k W, h> + a constant."""
        if self.block.pooling == "avg":
            return None
        return (self.block.conv_k.weight.detach().view(1, -1).to(weight.dtype) @ weight).view(-1)

    def fold_pointwise_conv(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, key):
        """The block on y = W h + b (W [C, C_in] and b in float32 or wider) as the per-sample
        channel affine ``(scale, shift)``: scale = sigmoid(delta_mul) for mul fusion (else
        None), shift = delta_add for add fusion (else None); [N, C] each.

        Both poolings are linear in y: avg(y) = W avg(h) + b; the att logits are
        W_k y + b_k = <key, h> + a constant that the softmax drops, and as alpha sums
        to 1, sum_j alpha_j y_j = W (sum_j alpha_j h_j) + b.
        """
        n, c_in = h.shape[:2]
        with no_autocast(h):
            rows = h.reshape(n, c_in, -1).transpose(1, 2)  # [N, THW, C_in], a view in either layout
            rows = rows if rows.dtype == weight.dtype else rows.to(weight.dtype)
            if key is None:
                pooled = rows.mean(dim=1)
            else:
                pooled = self.block.attention_pool(torch.matmul(rows, key).unsqueeze(1), rows).squeeze(1)
            context = torch.addmm(bias, pooled, weight.t()).view(n, -1, 1, 1, 1)
            affine = {fusion: transform(context).view(n, -1) for fusion, transform in self.block.branches()}
        return (torch.sigmoid(affine["mul"]) if "mul" in affine else None), affine.get("add")


class AbsorbedNormalizationAttention(_Absorbed):
    """An NA block read through the 1x1x1 conv before it."""

    @staticmethod
    def position_key(weight: torch.Tensor) -> torch.Tensor:
        """mean_C(W) [C_in]: the channel mean of y = W h + b at a position is <mean_C(W), h> + mean(b)."""
        return weight.mean(dim=0)

    def fold_pointwise_conv(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, key: torch.Tensor):
        """The NA gate on y = W h + b as the per-sample channel affine (gate [N, C], None).

        Both statistics are linear in y: the channel mean is c_p = <key, h_p> + mean(b)
        (the constant cancels in Eq. 5's centring), and as the weights a sum to 1,
        g = W (sum_p a_p h_p) + b. So they cost two passes over h and none over y.
        """
        n, c_in = h.shape[:2]
        with no_autocast(h):
            flat = h.reshape(n, c_in, -1)  # a view in either memory format
            flat = flat if flat.dtype == weight.dtype else flat.to(weight.dtype)
            weights = self.block.attention(torch.matmul(key, flat))
            g = torch.addmm(bias, weighted_sum(flat, weights), weight.t())
            return self.block.gate(g).view(n, -1), None


class GateEpilogue(nn.Module):
    """``act(x * gate(x) * scale + shift)``: a CGD gate, the eval BatchNorm after it (per-channel
    ``scale``, ``shift``) and, once ``relu`` is set, the ReLU after that, written into x (no new
    buffers) when autograd does not need x. The rewrite uses it only where nothing else reads x."""

    def __init__(self, block: CompactGlobalDescriptor, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("scale", scale.detach().reshape(1, -1, 1, 1, 1).clone(), persistent=False)
        self.register_buffer("shift", shift.detach().reshape(1, -1, 1, 1, 1).clone(), persistent=False)
        self.relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place mul_ / add_ / relu_: on the CPU ~3x faster than one addcmul over the same memory.
        scale = (self.block.gate(x) * self.scale).to(x.dtype)
        out = x * scale if torch.is_grad_enabled() and x.requires_grad else x.mul_(scale)
        out = out.add_(self.shift.to(x.dtype))
        return out.relu_() if self.relu else out


_ABSORBERS = {GlobalContextBlock: AbsorbedGlobalContext, NormalizationAttention: AbsorbedNormalizationAttention}


def _absorber_class(block: Optional[nn.Module]):
    return next((wrapper for cls, wrapper in _ABSORBERS.items() if isinstance(block, cls)), None)


def absorbable(block: Optional[nn.Module]) -> bool:
    """True for a block that a preceding 1x1x1 conv can absorb."""
    return _absorber_class(block) is not None


def absorber_for(block: nn.Module) -> nn.Module:
    """The form of ``block`` that a preceding 1x1x1 conv absorbs (see ``absorbable``)."""
    return _absorber_class(block)(block)


def takes_epilogue(block: Optional[nn.Module]) -> bool:
    """True for a block whose following eval BatchNorm and ReLU ``GateEpilogue`` can apply."""
    return isinstance(block, CompactGlobalDescriptor)
