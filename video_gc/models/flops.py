"""FLOP counting with fvcore (one multiply-add = one FLOP), in two conventions.

- ``zoo``: convolutions, matmuls (matmul / mm / bmm / einsum) and the fc only.
  The PySlowFast and PyTorchVideo model zoos count this way: Slow R50 is
  41.74 G at 8x224x224 and 54.52 G at 8x256x256.
- ``fvcore``: fvcore's default handles, which also count BatchNorm, LayerNorm
  and a few pooling / upsampling ops: 41.92 G and 54.75 G (MMAction2's figure).

Both come from one trace: fvcore's per-operator counts, summed over the
operators each convention includes.
"""

import warnings
from collections import Counter
from typing import Dict, Sequence

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore's import touches the deprecated torch.jit.script; keep tool output clean.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

# fvcore operator names (namespace stripped) that the model-zoo convention counts.
ZOO_OPERATORS = frozenset({"conv", "_convolution", "linear", "addmm", "matmul", "mm", "bmm", "einsum"})
CONVENTIONS = ("zoo", "fvcore")


def _matmul_flops(inputs, outputs) -> int:
    """torch.matmul with any operand ranks (fvcore's own handle rejects 1-D
    operands, which CGD uses): one multiply-add per output element and
    contracted index."""
    contracted = get_shape(inputs[0])[-1]
    out = get_shape(outputs[0])
    n = 1
    for d in out:
        n *= d
    return n * contracted


def flops_by_operator(model: nn.Module, inputs: torch.Tensor) -> Counter:
    """fvcore's per-operator FLOPs (default handles) of one eval-mode forward pass."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = (
                FlopCountAnalysis(model, inputs)
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
                .tracer_warnings("none")
                .set_op_handle("aten::matmul", _matmul_flops)
            )
            return Counter(analysis.by_operator())
    finally:
        model.train(was_training)


def total_flops(by_operator: Counter, convention: str = "zoo") -> int:
    """Sum per-operator counts under a convention (``zoo`` or ``fvcore``)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"FLOP convention: invalid value {convention!r}; allowed values: {', '.join(CONVENTIONS)}")
    if convention == "fvcore":
        return int(sum(by_operator.values()))
    return int(sum(v for op, v in by_operator.items() if op in ZOO_OPERATORS))


def count_flops(model: nn.Module, input_shape: Sequence[int], conventions: Sequence[str] = CONVENTIONS) -> Dict[str, int]:
    """FLOPs of ``model`` on one zero input of ``input_shape`` ([N, C, T, H, W]),
    per convention. The input goes to the device of the model's parameters."""
    device = next(model.parameters()).device
    by_op = flops_by_operator(model, torch.zeros(tuple(input_shape), device=device))
    return {name: total_flops(by_op, name) for name in conventions}
