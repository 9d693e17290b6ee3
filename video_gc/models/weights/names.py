"""Parameter-name mappings between weight layouts and video_gc's names.

video_gc's names (fixed by the model API) are the hub every layout maps to:

====================  =====================  ========================  =================================
video_gc              torchvision ResNet     Caffe2 / Detectron .pkl   PySlowFast
====================  =====================  ========================  =================================
stem.conv.weight      conv1.weight           conv1_w                   s1.pathway0_stem.conv.weight
stem.bn.weight        bn1.weight             res_conv1_bn_s            s1.pathway0_stem.bn.weight
stem.bn.bias          bn1.bias               res_conv1_bn_b            s1.pathway0_stem.bn.bias
res3.0.branch1        layer2.0.downsample.0  res3_0_branch1_w          s3.pathway0_res0.branch1
res3.0.branch1_bn     layer2.0.downsample.1  res3_0_branch1_bn_{s,b}   s3.pathway0_res0.branch1_bn
res3.1.branch2.a      layer2.1.conv1         res3_1_branch2a_w         s3.pathway0_res1.branch2.a
res3.1.branch2.b_bn   layer2.1.bn2           res3_1_branch2b_bn_{s,b}  s3.pathway0_res1.branch2.b_bn
res3.1.nonlocal.X     (none)                 (none)                    s3.pathway0_nonlocal1.X
head.projection       fc                     pred_{w,b}                head.projection
====================  =====================  ========================  =================================

Caffe2 BN blobs: ``_s`` scale (weight), ``_b`` bias, ``_rm`` running mean,
``_riv`` running variance (PySlowFast's reading of that blob).

PyTorchVideo's ``create_resnet`` keeps a flat ``blocks`` list: the stem at 0,
then the stages, with an extra parameter-free max-pool module after the first
stage for C2D and I3D (so res3 is ``blocks.3`` there and ``blocks.2`` for Slow),
then the head (``blocks.N.proj``). Inside a stage: ``res_blocks.i.branch1_conv``,
``branch1_norm``, ``branch2.conv_{a,b,c}``, ``branch2.norm_{a,b,c}``.

Every ``*_to_ours`` function returns None for a key it does not know.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

from ..resnet import CONTEXT_MODULE_NAMES

# Model-name fragments of the parts that have no 2D counterpart (contract names).
CONTEXT_PATTERN = re.compile(r"(^|\.)(" + "|".join(CONTEXT_MODULE_NAMES) + r")\.")
HEAD_PREFIX = "head.projection."

_TV_BN = {"1": "a", "2": "b", "3": "c"}
_C2_BN_SUFFIX = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_PTV_BRANCH2 = {"conv_a": "a", "conv_b": "b", "conv_c": "c", "norm_a": "a_bn", "norm_b": "b_bn", "norm_c": "c_bn"}
_OURS_TO_PTV_BRANCH2 = {v: k for k, v in _PTV_BRANCH2.items()}


def is_context_key(name: str) -> bool:
    """True for parameters of NL / GC / SNL / SE / NA / CGD blocks."""
    return bool(CONTEXT_PATTERN.search(name))


def is_head_key(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


def strip_module_prefix(state: Mapping) -> dict:
    """Drop the ``module.`` prefix that DataParallel / DDP checkpoints carry."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _rules(table: Iterable[tuple[str, Callable[[re.Match], str]]]):
    compiled = [(re.compile(p), f) for p, f in table]

    def convert(key: str) -> str | None:
        for pattern, fn in compiled:
            m = pattern.fullmatch(key)
            if m:
                return fn(m)
        return None

    return convert


torchvision_to_ours = _rules([
    (r"conv1\.weight", lambda m: "stem.conv.weight"),
    (r"bn1\.(\w+)", lambda m: f"stem.bn.{m[1]}"),
    (r"layer(\d)\.(\d+)\.conv([123])\.weight",
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.branch2.{_TV_BN[m[3]]}.weight"),
    (r"layer(\d)\.(\d+)\.bn([123])\.(\w+)",
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.branch2.{_TV_BN[m[3]]}_bn.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.branch1.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", lambda m: f"res{int(m[1]) + 1}.{m[2]}.branch1_bn.{m[3]}"),
    (r"fc\.(weight|bias)", lambda m: f"head.projection.{m[1]}"),
])
torchvision_to_ours.__doc__ = "torchvision ResNet name -> video_gc name (or None)."

caffe2_to_ours = _rules([
    (r"conv1_w", lambda m: "stem.conv.weight"),
    (r"res_conv1_bn_(s|b|rm|riv)", lambda m: f"stem.bn.{_C2_BN_SUFFIX[m[1]]}"),
    (r"res(\d)_(\d+)_branch1_w", lambda m: f"res{m[1]}.{m[2]}.branch1.weight"),
    (r"res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)", lambda m: f"res{m[1]}.{m[2]}.branch1_bn.{_C2_BN_SUFFIX[m[3]]}"),
    (r"res(\d)_(\d+)_branch2([abc])_w", lambda m: f"res{m[1]}.{m[2]}.branch2.{m[3]}.weight"),
    (r"res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)",
     lambda m: f"res{m[1]}.{m[2]}.branch2.{m[3]}_bn.{_C2_BN_SUFFIX[m[4]]}"),
    (r"(?:pred|fc1000)_(w|b)", lambda m: f"head.projection.{'weight' if m[1] == 'w' else 'bias'}"),
])
caffe2_to_ours.__doc__ = "Caffe2/Detectron blob name -> video_gc name (or None)."

# Blobs Detectron stores next to the weights that are training state, not weights.
CAFFE2_IGNORED = re.compile(r".*_momentum|model_iter|lr|weight_order")

pyslowfast_to_ours = _rules([
    (r"s1\.pathway0_stem\.(conv|bn)\.(\w+)", lambda m: f"stem.{m[1]}.{m[2]}"),
    (r"s(\d)\.pathway0_res(\d+)\.(.+)", lambda m: f"res{m[1]}.{m[2]}.{m[3]}"),
    (r"s(\d)\.pathway0_nonlocal(\d+)\.(.+)", lambda m: f"res{m[1]}.{m[2]}.nonlocal.{m[3]}"),
    (r"head\.projection\.(weight|bias)", lambda m: f"head.projection.{m[1]}"),
])
pyslowfast_to_ours.__doc__ = "PySlowFast single-pathway name -> video_gc name (or None)."

ours_to_pyslowfast = _rules([
    (r"stem\.(conv|bn)\.(\w+)", lambda m: f"s1.pathway0_stem.{m[1]}.{m[2]}"),
    (r"res(\d)\.(\d+)\.nonlocal\.(.+)", lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.{m[3]}"),
    (r"res(\d)\.(\d+)\.(branch.+)", lambda m: f"s{m[1]}.pathway0_res{m[2]}.{m[3]}"),
    (r"head\.projection\.(weight|bias)", lambda m: f"head.projection.{m[1]}"),
])
ours_to_pyslowfast.__doc__ = "video_gc name -> PySlowFast name (None for blocks PySlowFast lacks)."


def pytorchvideo_layout(keys: Iterable[str]) -> dict[int, str]:
    """Map each ``blocks.<i>`` index of a PyTorchVideo ResNet state dict to our module name.

    The stages are the blocks holding ``res_blocks`` in order (res2, res3, ...),
    the head the one holding ``proj``; parameter-free pools take no index here.
    """
    stage_idx, head_idx = set(), set()
    for key in keys:
        m = re.match(r"blocks\.(\d+)\.(res_blocks|proj)\.", key)
        if m:
            (stage_idx if m[2] == "res_blocks" else head_idx).add(int(m[1]))
    layout = {0: "stem"}
    layout.update({idx: f"res{n}" for n, idx in enumerate(sorted(stage_idx), start=2)})
    layout.update({idx: "head" for idx in head_idx})
    return layout


def pytorchvideo_to_ours(key: str, layout: Mapping[int, str]) -> str | None:
    """PyTorchVideo ResNet name -> video_gc name (or None); ``layout`` from :func:`pytorchvideo_layout`."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if not m or int(m[1]) not in layout:
        return None
    part, rest = layout[int(m[1])], m[2]
    if part == "stem":
        m = re.fullmatch(r"(conv|norm)\.(\w+)", rest)
        return f"stem.{'conv' if m[1] == 'conv' else 'bn'}.{m[2]}" if m else None
    if part == "head":
        m = re.fullmatch(r"proj\.(weight|bias)", rest)
        return f"head.projection.{m[1]}" if m else None
    m = re.fullmatch(r"res_blocks\.(\d+)\.(branch1_conv|branch1_norm)\.(\w+)", rest)
    if m:
        return f"{part}.{m[1]}.{'branch1' if m[2] == 'branch1_conv' else 'branch1_bn'}.{m[3]}"
    m = re.fullmatch(r"res_blocks\.(\d+)\.branch2\.(conv_[abc]|norm_[abc])\.(\w+)", rest)
    if m:
        return f"{part}.{m[1]}.branch2.{_PTV_BRANCH2[m[2]]}.{m[3]}"
    return None


def ours_to_pytorchvideo(key: str, *, stage1_pool: bool, num_stages: int = 4) -> str | None:
    """video_gc name -> PyTorchVideo ``create_resnet`` name (None for blocks it lacks).

    ``stage1_pool``: PyTorchVideo places a max-pool module after res2 (C2D, I3D),
    which shifts the indices of every later stage and of the head by one.
    """
    def stage_index(stage: int) -> int:
        return stage - 1 + (1 if stage1_pool and stage > 2 else 0)

    m = re.fullmatch(r"stem\.(conv|bn)\.(\w+)", key)
    if m:
        return f"blocks.0.{'conv' if m[1] == 'conv' else 'norm'}.{m[2]}"
    m = re.fullmatch(r"head\.projection\.(weight|bias)", key)
    if m:
        return f"blocks.{stage_index(num_stages + 2)}.proj.{m[1]}"
    m = re.fullmatch(r"res(\d)\.(\d+)\.(branch1|branch1_bn)\.(\w+)", key)
    if m:
        name = "branch1_conv" if m[3] == "branch1" else "branch1_norm"
        return f"blocks.{stage_index(int(m[1]))}.res_blocks.{m[2]}.{name}.{m[4]}"
    m = re.fullmatch(r"res(\d)\.(\d+)\.branch2\.(a|b|c|a_bn|b_bn|c_bn)\.(\w+)", key)
    if m:
        return f"blocks.{stage_index(int(m[1]))}.res_blocks.{m[2]}.branch2.{_OURS_TO_PTV_BRANCH2[m[3]]}.{m[4]}"
    return None
