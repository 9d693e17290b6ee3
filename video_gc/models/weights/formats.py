"""Reading weight files of every supported layout into video_gc's names.

Layouts (``fmt``):

- ``torchvision``: a torchvision ResNet state dict (``.pth``), bare or under
  ``state_dict`` / ``model``.
- ``caffe2``: a Caffe2/Detectron pickle (``R-50.pkl``), arrays by blob name,
  bare or under ``blobs``; read with the restricted unpickler.
- ``pyslowfast``: a PySlowFast checkpoint (``.pyth``, ``model_state``).
- ``pytorchvideo``: a PyTorchVideo ``create_resnet`` state dict (bare or under
  ``model_state``, as its model zoo ships them).
- ``video_gc``: our own checkpoints (``model_state`` in our names).
- ``auto`` (and PySlowFast's ``pytorch``): decided from the file's bytes and
  parameter names.

Torch files are read with ``safe_torch_load`` (``weights_only=True``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from video_gc.registry import WEIGHT_FORMATS
from video_gc.utils.io import CheckpointError, safe_torch_load

from . import names
from .caffe2_pickle import load_caffe2_pickle

FORMATS = ("torchvision", "caffe2", "pyslowfast", "pytorchvideo", "video_gc")
# TRAIN/TEST.CHECKPOINT_TYPE / --format value -> layout; "pytorch" is PySlowFast's name for any torch file.
for _name in ("auto", "pytorch") + FORMATS:
    WEIGHT_FORMATS.register(_name, "auto" if _name == "pytorch" else _name)

# Start of a legacy (non-zip) torch.save file: protocol 2, then the magic number as LONG1.
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# A key that only one layout writes, per layout (checked in this order).
_SIGNATURES = (
    ("pyslowfast", re.compile(r"s\d\.pathway0_(stem|res\d+|nonlocal\d+)\.")),
    ("pytorchvideo", re.compile(r"blocks\.\d+\.(res_blocks\.\d+\.|conv\.weight$|proj\.)")),
    ("video_gc", re.compile(r"(stem\.(conv|bn)\.|res\d\.\d+\.branch)")),
    ("torchvision", re.compile(r"(layer\d\.\d+\.(conv|bn)\d\.|conv1\.weight$|bn1\.)")),
    ("caffe2", re.compile(r"(conv1_w$|res_conv1_bn_|res\d_\d+_branch)")),
)


@dataclass
class SourceWeights:
    """A checkpoint's tensors renamed to video_gc's names.

    ``origin`` maps each of our names to the checkpoint's own key; ``unused``
    lists checkpoint keys with no video_gc counterpart; ``ignored`` lists
    entries that are training state or not arrays (Caffe2 momentum blobs...).
    """

    path: str
    format: str
    tensors: dict[str, torch.Tensor]
    origin: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def resolve_format(fmt: str) -> str:
    """Normalise a TRAIN.CHECKPOINT_TYPE / --format value."""
    try:
        return WEIGHT_FORMATS[fmt]
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def read_checkpoint(path: str, fmt: str = "auto") -> Any:
    """Load the raw object from ``path`` safely (torch zip/legacy or restricted pickle)."""
    fmt = resolve_format(fmt)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if fmt == "caffe2":
        return load_caffe2_pickle(path)
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC):
        if fmt == "auto":
            return load_caffe2_pickle(path)
        if head.startswith(b"\x80"):
            raise CheckpointError(
                f"checkpoint {path} is a plain pickle, not a torch checkpoint as format '{fmt}' expects; "
                f"use format caffe2 (or auto) for Caffe2/Detectron .pkl files"
            )
    return safe_torch_load(path)


def unwrap_state(obj: Any, path: str) -> dict:
    """The flat name -> array mapping inside a checkpoint object."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights")
    for key in ("model_state", "state_dict", "model", "blobs"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(_is_array(v) for v in inner.values()):
            return names.strip_module_prefix(inner)
    return names.strip_module_prefix(obj)


def detect_format(state: Mapping, path: str) -> str:
    """Which layout the parameter names follow; CheckpointError when none does."""
    keys = [k for k in state if isinstance(k, str)]
    for fmt, pattern in _SIGNATURES:
        if any(pattern.match(k) for k in keys):
            return fmt
    sample = ", ".join(keys[:5]) or "(no string keys)"
    raise CheckpointError(
        f"checkpoint {path} is not a ResNet checkpoint in any supported layout "
        f"({', '.join(FORMATS)}); first keys: {sample}"
    )


def require_finite(tensors: Mapping[str, torch.Tensor], path: str) -> None:
    """Refuse weights with NaN or inf values: a model made of them still ranks classes and
    scores test sets, so every number it reported would look real and mean nothing."""
    bad = [key for key, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights: {len(bad)} of {len(tensors)} tensors contain NaN or inf, "
            f"the first is {bad[0]}; refusing to use it, as every result computed from it would be meaningless. "
            f"Use another checkpoint (to resume training from an earlier one, move this file out of its folder)"
        )


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in "fiub")


def _to_tensor(value: Any) -> torch.Tensor | None:
    if not _is_array(value):
        return None
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value, copy=True))


def _name_mapper(fmt: str, keys) -> Callable[[str], str | None]:
    if fmt == "torchvision":
        return names.torchvision_to_ours
    if fmt == "caffe2":
        return names.caffe2_to_ours
    if fmt == "pyslowfast":
        return names.pyslowfast_to_ours
    if fmt == "pytorchvideo":
        layout = names.pytorchvideo_layout(keys)
        return lambda key: names.pytorchvideo_to_ours(key, layout)
    return lambda key: key if re.match(r"(stem|res\d|head)\.", key) else None


def load_source(path: str, fmt: str = "auto") -> SourceWeights:
    """Read ``path`` and rename its tensors to video_gc's names."""
    fmt = resolve_format(fmt)
    state = unwrap_state(read_checkpoint(path, fmt), path)
    if fmt == "auto":
        fmt = detect_format(state, path)
    mapper = _name_mapper(fmt, [k for k in state if isinstance(k, str)])
    source = SourceWeights(path=path, format=fmt, tensors={})
    for key, value in state.items():
        tensor = _to_tensor(value)
        if tensor is None or not isinstance(key, str) or (fmt == "caffe2" and names.CAFFE2_IGNORED.fullmatch(key)):
            source.ignored.append(str(key))
            continue
        ours = mapper(key)
        if ours is None:
            source.unused.append(key)
        else:
            source.tensors[ours] = tensor
            source.origin[ours] = key
    require_finite({source.origin[k]: t for k, t in source.tensors.items()}, path)
    return source
