"""Restricted reader for Caffe2 / Detectron weight pickles (``R-50.pkl``).

These files are plain Python pickles (often written by Python 2), so an
ordinary ``pickle.load`` would run any callable the file names. The unpickler
here resolves only the handful of globals that a dict of numpy arrays needs:

- ``numpy.ndarray`` and numpy's array reconstructor (``numpy.core.multiarray``
  in files written by numpy 1, ``numpy._core.multiarray`` by numpy 2),
- numpy's ``_frombuffer`` (``numpy.core.numeric`` / ``numpy._core.numeric``), which
  pickle protocol 5 uses for arrays (Python 3.14's default protocol),
- ``numpy.dtype`` (object dtypes refused: they would unpickle arbitrary items),
- ``_codecs.encode`` with the latin1 codec (how Python 3 writes bytes at protocol 2),
- ``collections.OrderedDict``.

Everything else (``os.system``, ``builtins.open``, ...) is refused before it
is called. Python 2 strings are decoded as latin1, which keeps raw array bytes
intact.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from typing import Any

import numpy as np

from video_gc.utils.io import CheckpointError

# numpy's own reconstructor, taken from ndarray.__reduce__ so no private module is imported.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def _safe_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(obj, align=align, copy=copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dtype!r} is not allowed in a weights file")
    return dtype


def _frombuffer(buf: Any, dtype: Any, shape: tuple, order: str) -> np.ndarray:
    """Protocol 5's array constructor, restricted to plain dtypes."""
    return np.frombuffer(buf, dtype=_safe_dtype(dtype)).reshape(shape, order=order).copy(order="K")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits plain containers and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (a weights file needs only plain containers "
                f"and numpy arrays)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a weights file")


def load_caffe2_pickle(path: str) -> Any:
    """Read a Caffe2/Detectron pickle with :class:`RestrictedUnpickler`.

    Raises CheckpointError naming the file when it is missing, empty, truncated,
    not a pickle, or asks for anything beyond containers and numpy arrays.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        text = str(err)
        if "is not allowed" in text:
            raise CheckpointError(f"refused to load {path}: {text}") from err
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt, or neither a torch checkpoint "
            f"nor a pickle ({text})"
        ) from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            UnicodeDecodeError) as err:
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt ({type(err).__name__}: {detail})"
        ) from err
