"""Forward hooks that capture the real tensors of the context blocks.

Every block routes its attention or gate through an ``nn.Identity`` probe (see the model
contract), so a forward hook on the probe sees exactly the tensor the block uses:

- non-local blocks (``attention_probe`` and ``output_probe``): the block input x
  [N, C, T, H, W] (a forward pre-hook on the block), the attention w [N, Nq, Nk], the output
  before fusion BN(W_z y) = z - x [N, C, T, H, W], and the key grid (Tk, Hk, Wk) read from
  the output of ``conv_g``, which always runs on the (possibly max-pooled) keys;
- attention-pooling blocks (GC, SNL, att_mul: ``attention_probe`` only): alpha
  [N, 1, T*H*W] and the feature grid (T, H, W) of the block input;
- gated blocks (CGD, NA: ``gate_probe``): the channel gate [N, C, T or 1, 1, 1].

Blocks are found by these probe attributes, so every instantiation is covered. A block
whose probe did not fire (e.g. a GCNet-framework block with average pooling) records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["BlockRecord", "ContextRecorder", "find_context_blocks"]

NONLOCAL, ATTENTION_POOLING, GATE = "nonlocal", "attention_pooling", "gate"


def _kind(module: nn.Module) -> str | None:
    if hasattr(module, "output_probe") and hasattr(module, "attention_probe"):
        return NONLOCAL
    if hasattr(module, "attention_probe"):
        return ATTENTION_POOLING
    if hasattr(module, "gate_probe"):
        return GATE
    return None


def find_context_blocks(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """name -> (kind, module) for every probed block of ``model``, in forward order of names."""
    found = {}
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is not None:
            found[name] = (kind, module)
    return found


@dataclass
class BlockRecord:
    """What one forward pass left in one block (tensors detached, float32, same device)."""

    name: str
    kind: str
    block_type: str
    instantiation: str | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    key_grid: tuple[int, int, int] | None = None
    grid: tuple[int, int, int] | None = None


def _keep(t: torch.Tensor) -> torch.Tensor:
    # A copy: later in-place ops (ReLU(inplace=True)) must not change what was recorded.
    return t.detach().float().clone()


class ContextRecorder:
    """Context manager that records the probes of ``model``'s context blocks.

        with ContextRecorder(model) as rec:
            model(x)
        rec.records["res3.1.nonlocal"].tensors["attention"]

    ``blocks`` restricts recording to some block names (KeyError naming the known ones
    otherwise). ``records`` holds the last forward pass; ``clear()`` empties it.
    """

    def __init__(self, model: nn.Module, blocks: list[str] | None = None) -> None:
        available = find_context_blocks(model)
        if blocks is not None:
            missing = [b for b in blocks if b not in available]
            if missing:
                known = ", ".join(available) or "none"
                raise KeyError(f"no context block named {', '.join(missing)}; the model has: {known}")
            available = {b: available[b] for b in blocks}
        self.blocks = available
        self.records: dict[str, BlockRecord] = {}
        self._handles: list = []

    def clear(self) -> None:
        self.records = {}

    def _record(self, name: str) -> BlockRecord:
        if name not in self.records:
            kind, module = self.blocks[name]
            self.records[name] = BlockRecord(
                name=name, kind=kind, block_type=type(module).__name__,
                instantiation=getattr(module, "instantiation", None),
            )
        return self.records[name]

    def _store(self, name: str, key: str):
        def hook(_module, _inputs, output):
            self._record(name).tensors[key] = _keep(output)
        return hook

    def __enter__(self) -> "ContextRecorder":
        for name, (kind, module) in self.blocks.items():
            reg = self._handles.append
            if kind == NONLOCAL:
                def pre(_module, inputs, name=name):
                    rec = self._record(name)
                    rec.tensors["input"] = _keep(inputs[0])
                    rec.grid = tuple(inputs[0].shape[2:])

                def key_grid(_module, _inputs, output, name=name):
                    self._record(name).key_grid = tuple(output.shape[2:])

                reg(module.register_forward_pre_hook(pre))
                reg(module.attention_probe.register_forward_hook(self._store(name, "attention")))
                reg(module.output_probe.register_forward_hook(self._store(name, "output")))
                reg(module.conv_g.register_forward_hook(key_grid))
            elif kind == ATTENTION_POOLING:
                def grid(_module, inputs, name=name):
                    self._record(name).grid = tuple(inputs[0].shape[2:])

                reg(module.register_forward_pre_hook(grid))
                reg(module.attention_probe.register_forward_hook(self._store(name, "alpha")))
            else:
                reg(module.gate_probe.register_forward_hook(self._store(name, "gate")))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def complete(self) -> dict[str, BlockRecord]:
        """The records whose probe fired (a GC block's pre-hook alone records only a grid)."""
        needed = {NONLOCAL: ("input", "attention", "output"), ATTENTION_POOLING: ("alpha",), GATE: ("gate",)}
        return {n: r for n, r in self.records.items() if all(k in r.tensors for k in needed[r.kind])}
