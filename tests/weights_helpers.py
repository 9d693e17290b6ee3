"""Shared by tests/test_weights_*.py: realistic random weights and a Caffe2 writer."""

import re

import numpy as np
import torch
from torch import nn

# Last BN of a residual branch / shortcut in torchvision, video_gc and PyTorchVideo names.
_FINAL_BN = re.compile(r".*(bn3|downsample\.1|c_bn|branch1_bn|norm_c|branch1_norm)$")


def realistic_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random, non-trivial BN statistics and affine parameters, in place.

    A fresh network has mean 0 / var 1 / gamma 1 / beta 0, under which a wrong BN
    mapping would go unnoticed. Residual-branch gammas are kept small, as in a
    trained ResNet, so the activations stay O(1) through 16 blocks.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                scale = 0.2 if _FINAL_BN.match(name) else 1.0
                m.weight.copy_((torch.rand(n, generator=g) * 0.5 + 0.5) * scale)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


def torchvision_to_detectron_blobs(state: dict, eps: float = 1e-5) -> dict:
    """Rename a torchvision ResNet state dict the way Detectron's R-50.pkl names blobs.

    Written independently of video_gc's mapping. BNs are folded into Detectron's
    frozen affine form (scale ``_bn_s``, bias ``_bn_b``, no running statistics).
    """
    blobs = {}

    def bn(prefix: str, c2_name: str) -> None:
        scale = state[f"{prefix}.weight"] / torch.sqrt(state[f"{prefix}.running_var"] + eps)
        blobs[f"{c2_name}_s"] = scale.numpy().astype(np.float32)
        blobs[f"{c2_name}_b"] = (state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale).numpy()

    blobs["conv1_w"] = state["conv1.weight"].numpy()
    bn("bn1", "res_conv1_bn")
    for layer in range(1, 5):
        for i in range(100):
            pre = f"layer{layer}.{i}"
            if f"{pre}.conv1.weight" not in state:
                break
            c2 = f"res{layer + 1}_{i}"
            for n, letter in ((1, "a"), (2, "b"), (3, "c")):
                blobs[f"{c2}_branch2{letter}_w"] = state[f"{pre}.conv{n}.weight"].numpy()
                bn(f"{pre}.bn{n}", f"{c2}_branch2{letter}_bn")
            if f"{pre}.downsample.0.weight" in state:
                blobs[f"{c2}_branch1_w"] = state[f"{pre}.downsample.0.weight"].numpy()
                bn(f"{pre}.downsample.1", f"{c2}_branch1_bn")
    blobs["pred_w"] = state["fc.weight"].numpy()
    blobs["pred_b"] = state["fc.bias"].numpy()
    # Detectron files also carry solver state next to the weights.
    blobs["pred_w_momentum"] = np.zeros_like(blobs["pred_w"])
    return {"blobs": blobs}
