"""Inference-only rewrite of a video ResNet: BatchNorm folded into the conv before
it, and the ReLU / residual add that follow fused into the same call.

In eval mode a BatchNorm is the per-channel affine map
``y = gamma * (x - mean) / sqrt(var + eps) + beta`` (Ioffe & Szegedy, Alg. 2), so a
conv followed by it is one conv with scaled kernels and a bias. On the CPU the
fused conv runs through oneDNN with ReLU and the residual add as post-ops, which
saves one full read and write of the activation per BN, ReLU and add, and with its
weights packed once into oneDNN's blocked layout instead of in every call; on other
devices it runs as conv + bias + add + ReLU, numerically the same.

The rewrite traces the model with ``torch.fx``. Context blocks (NL, GC, SE, CGD,
NA) are kept as opaque modules, except that:

- a GCNet-family or NA block right after a 1x1x1 conv (CONTEXT.POSITION after1x1)
  is absorbed by that conv: its pooling is linear in the conv's output, so it is
  computed from the conv's input, and its add / mul fusion becomes a per-sample
  bias / weight scale (``fold_pointwise_conv`` on the block);
- a CGD takes over the eval BN + ReLU that follow it (applied in place with its
  gate, without new buffers).

Only a conv whose output has a single consumer is fused, so every rewrite is
exact up to float rounding.

    fused = fuse_for_inference(model)      # a new module; ``model`` is untouched
"""

from __future__ import annotations

import copy
import keyword
import operator
from collections import Counter
from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

_BLOCKS_PACKAGE = "video_gc.models.blocks"
_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm):
    """(scale, shift) per channel with ``bn(x) == x * scale + shift`` in eval mode."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
    return scale, shift


def fold_batchnorm(conv: nn.Conv3d, bn: Optional[nn.modules.batchnorm._BatchNorm]):
    """(weight, bias) of the single conv equal to ``bn(conv(x))`` in eval mode."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                                       device=weight.device)
    if bn is None:
        return weight.clone(), bias.clone()
    scale, shift = batchnorm_affine(bn)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), bias * scale + shift


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
        """Inference only: compute ``block(conv(x))`` in this call (a 1x1x1 conv). ``block``
        has ``position_key(weight)``, a vector computed once here, and
        ``fold_pointwise_conv(x, weight, bias, key) -> (scale, shift)``: its effect as a
        per-sample channel affine of the conv's output, read from the conv's input."""
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
                and residual.is_contiguous(memory_format=_memory_format(x)))

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
            residual = residual.to(weight.dtype).contiguous(memory_format=_memory_format(x))
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, "relu" if relu else None, [], None)
        y = F.conv3d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y) if relu else y


def no_autocast(x: torch.Tensor):
    """A context with autocast off on ``x``'s device (a no-op context when it is off already)."""
    device = x.device.type
    return torch.autocast(device_type=device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext()


def is_channels_last_3d(x: torch.Tensor) -> bool:
    """True for a 5-D tensor laid out [N, T, H, W, C] in memory (and not also contiguous)."""
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
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


class _Tracer(fx.Tracer):
    """Traces the backbone; context blocks stay single opaque calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith(_BLOCKS_PACKAGE) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.GraphModule:
    graph = _Tracer().trace(model)
    # fx writes ``self.res3.1.nonlocal(...)``, a syntax error: alias keyword-named modules.
    for node in graph.nodes:
        if node.op == "call_module" and any(keyword.iskeyword(p) for p in node.target.split(".")):
            parent, _, name = node.target.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            alias = name + "_"
            while hasattr(owner, alias) and getattr(owner, alias) is not getattr(owner, name):
                alias += "_"
            setattr(owner, alias, getattr(owner, name))
            node.target = f"{parent}.{alias}" if parent else alias
    return fx.GraphModule(model, graph)


def _set_module(root: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, name = qualname.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _is_call(node: fx.Node, modules: dict, kinds) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), kinds)


def _is_relu(node: fx.Node, modules: dict) -> bool:
    return (_is_call(node, modules, nn.ReLU) or (node.op == "call_function" and node.target in _RELU_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("relu", "relu_")))


def _is_add(node: fx.Node) -> bool:
    plain = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    return plain and len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args)


def _sole_reader(node: fx.Node) -> bool:
    """True when ``node`` is the only reader of its input and that input is not the
    caller's tensor, so the block may overwrite it."""
    src = node.args[0]
    return isinstance(src, fx.Node) and src.op != "placeholder" and len(src.users) == 1


def fuse_for_inference(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` (eval mode) with conv+BN[+add][+ReLU] fused.

    Works on any model whose forward fx can trace with the context blocks as
    leaves (every video_gc ResNet). The result computes the same logits as
    ``model.eval()`` up to float rounding; it is for inference only.
    """
    from .blocks import CompactGlobalDescriptor

    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    modules = dict(gm.named_modules())
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    fused: dict = {}  # conv node -> FusedConv3d
    gated: dict = {}  # CGD node that took over the BN (and ReLU) after it -> the block
    for node in list(gm.graph.nodes):
        if _is_call(node, modules, nn.Conv3d) and calls[node.target] == 1:
            conv = modules[node.target]
            bn_node = next(iter(node.users)) if len(node.users) == 1 else None
            if bn_node is not None and _is_call(bn_node, modules, nn.BatchNorm3d) and modules[bn_node.target].track_running_stats:
                module = FusedConv3d(conv, modules[bn_node.target])
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
            else:
                module = FusedConv3d(conv)
            _set_module(gm, node.target, module)
            fused[node] = module
        elif _is_call(node, modules, CompactGlobalDescriptor) and len(node.users) == 1 and _sole_reader(node):
            # CGD applies its gate, the eval BN after it and (below) its ReLU in place.
            bn_node = next(iter(node.users))
            if _is_call(bn_node, modules, nn.BatchNorm3d) and modules[bn_node.target].track_running_stats:
                modules[node.target].fuse_epilogue(*batchnorm_affine(modules[bn_node.target]))
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
                gated[node] = modules[node.target]
        elif (node.op == "call_module" and hasattr(modules.get(node.target), "fold_pointwise_conv")
              and calls[node.target] == 1 and node.args[0] in fused):
            # A GCNet-family / NA block right after a 1x1x1 conv (after1x1) becomes a
            # per-sample scale / bias of that conv, so its add and ReLU stay fused.
            src = node.args[0]
            if len(src.users) == 1 and not fused[src].relu and len(src.args) == 1 and fused[src].pointwise:
                fused[src].absorb_context(modules[node.target])
                node.replace_all_uses_with(src)
                gm.graph.erase_node(node)
        elif _is_add(node):
            # Fuse the add into the operand computed last, so the other one already exists.
            candidates = [a for a in node.args if a in fused and len(a.users) == 1 and not fused[a].relu
                          and len(a.args) == 1]
            conv_node = max(candidates, key=order.__getitem__, default=None)
            other = node.args[1] if node.args[0] is conv_node else node.args[0]
            if conv_node is not None and order[other] < order[conv_node]:
                conv_node.args = (conv_node.args[0], other)
                node.replace_all_uses_with(conv_node)
                gm.graph.erase_node(node)
        elif _is_relu(node, modules):
            src = node.args[0]
            if src in fused and len(src.users) == 1 and not fused[src].relu:
                fused[src].relu = True
                node.replace_all_uses_with(src)
                gm.graph.erase_node(node)
            elif src in gated and len(src.users) == 1 and not gated[src].epilogue_relu:
                gated[src].epilogue_relu = True
                node.replace_all_uses_with(src)
                gm.graph.erase_node(node)
    for node, module in fused.items():
        residual = node.args[1] if len(node.args) == 2 else None
        # A conv may write its result into the residual it adds when that is a fresh conv output
        # (not the caller's tensor), not this conv's own input, and read by nothing else than
        # earlier fused convs (which make new tensors, so no view of it can outlive them).
        if residual in fused and node.args[0] is not residual:
            module.residual_writable = all(
                user is node or (user in fused and order[user] < order[node]) for user in residual.users)
    for param in gm.parameters():
        param.requires_grad_(False)  # inference only: the oneDNN paths assume nothing needs a gradient
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
