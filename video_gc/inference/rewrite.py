"""The inference graph rewrite: a traced copy of a video ResNet with every conv + eval
BatchNorm folded into one ``FusedConv3d`` and the ReLU / residual add after it fused
into the same call.

The rewrite traces the model with ``torch.fx``. Context blocks (any module with
``is_context_block``) stay opaque calls, except that a GCNet-family or NA block right
after a 1x1x1 conv is absorbed by that conv, and a CGD takes over the BN + ReLU after
it (``video_gc.inference.absorb``). Only a conv whose output has a single consumer is
fused, so every rewrite is exact up to float rounding.

    fused = fuse_for_inference(model)      # a new module; ``model`` is untouched
"""

from __future__ import annotations

import copy
import keyword
import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn

from video_gc.registry import BLOCKS

from .absorb import GateEpilogue, absorbable, absorber_for, takes_epilogue
from .bn_fold import batchnorm_affine
from .fused_conv import FusedConv3d

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


class _Tracer(fx.Tracer):
    """Traces the backbone; context blocks stay single opaque calls: modules that say
    ``is_context_block = True``, and the classes registered in ``BLOCKS`` (so a new block
    need not be traceable)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = tuple(spec.module for _, spec in BLOCKS.items())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (getattr(m, "is_context_block", False) or isinstance(m, self.blocks)
                or super().is_leaf_module(m, qualname))


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
    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    modules = dict(gm.named_modules())
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    fused: dict = {}  # conv node -> FusedConv3d
    gated: dict = {}  # gate node that took over the BN (and ReLU) after it -> its GateEpilogue
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
        elif (node.op == "call_module" and takes_epilogue(modules.get(node.target)) and len(node.users) == 1
              and _sole_reader(node)):
            # A CGD applies its gate, the eval BN after it and (below) its ReLU in place.
            bn_node = next(iter(node.users))
            if _is_call(bn_node, modules, nn.BatchNorm3d) and modules[bn_node.target].track_running_stats:
                gated[node] = GateEpilogue(modules[node.target], *batchnorm_affine(modules[bn_node.target]))
                _set_module(gm, node.target, gated[node])
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
        elif (node.op == "call_module" and calls[node.target] == 1 and node.args[0] in fused
              and absorbable(modules.get(node.target))):
            # A GCNet-family / NA block right after a 1x1x1 conv (after1x1) becomes a
            # per-sample scale / bias of that conv, so its add and ReLU stay fused.
            src = node.args[0]
            if len(src.users) == 1 and not fused[src].relu and len(src.args) == 1 and fused[src].pointwise:
                fused[src].absorb_context(absorber_for(modules[node.target]))
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
            elif src in gated and len(src.users) == 1 and not gated[src].relu:
                gated[src].relu = True
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
