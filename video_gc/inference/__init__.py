"""Inference: a trained model turned into the fastest exact (or near-exact) forward pass.

    bn_fold      BatchNorm folding maths
    fused_conv   FusedConv3d: conv + folded BN [+ residual add] [+ ReLU], oneDNN on the CPU
    absorb       inference-only forms of context blocks (absorbed by a conv, gate epilogues)
    rewrite      fuse_for_inference: the fx graph rewrite that puts those together
    modes        the inference modes (TEST.INFERENCE_MODE) and prepare_for_inference
"""

from .fused_conv import FusedConv3d
from .modes import InferenceModel, InferenceSettings, cpu_has_native_bf16, prepare_for_inference, resolve_mode
from .rewrite import fuse_for_inference

__all__ = [
    "FusedConv3d",
    "InferenceModel",
    "InferenceSettings",
    "cpu_has_native_bf16",
    "fuse_for_inference",
    "prepare_for_inference",
    "resolve_mode",
]
