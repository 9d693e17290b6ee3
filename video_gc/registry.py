"""The package's tables, one registry each: what a config may name.

    BLOCKS            context blocks (CONTEXT.TYPE), filled in ``video_gc.models.blocks``
    ARCHS             temporal layouts (MODEL.ARCH), filled in ``video_gc.models.arch``
    DEPTHS            stage depths (RESNET.DEPTH), filled in ``video_gc.models.arch``
    WEIGHT_FORMATS    checkpoint layouts (TRAIN/TEST.CHECKPOINT_TYPE), in ``video_gc.models.weights.formats``
    INFERENCE_MODES   forward-pass modes (TEST.INFERENCE_MODE), in ``video_gc.inference.modes``

Each table is filled by the module that implements it (its "home"). This module
sits below every other one, so the config layer can validate against the
tables; a registry imports its home the first time it is read, so a lookup
always sees every entry without the config importing the models at load time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional


class Registry:
    """name -> entry, in registration order.

    Args:
        kind: what an entry is, for messages ("context block").
        home: the module whose import registers the built-in entries.
    """

    def __init__(self, kind: str, home: str) -> None:
        self.kind = kind
        self.home = home
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str, entry: Any) -> Any:
        """Add ``entry`` under ``name``; a name is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> Any:
        """Remove and return an entry (for plug-ins and tests that add one temporarily)."""
        return self._entries.pop(name)

    def _table(self) -> dict[str, Any]:
        if not self._loaded:
            importlib.import_module(self.home)  # a failed import is retried at the next lookup
            self._loaded = True
        return self._entries

    def __getitem__(self, name: str) -> Any:
        table = self._table()
        if name not in table:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed values: {', '.join(map(str, table))}")
        return table[name]

    def __contains__(self, name: object) -> bool:
        return name in self._table()

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._table()))

    def names(self) -> tuple:
        return tuple(self._table())

    def items(self) -> tuple:
        return tuple(self._table().items())


@dataclass(frozen=True)
class BlockSpec:
    """How the backbone builds and places one kind of context block.

    Attributes:
        build: ``build(context_cfg, dim, num_frames) -> nn.Module``; ``context_cfg`` is
            the config's CONTEXT section, ``dim`` the channels where the block sits
            (for a block that is not ``selectable``: its constructor).
        module: the class ``build`` returns (weight-decay grouping finds blocks by it).
        positions: the CONTEXT.POSITION values it may take besides ``default``:
            ``after1x1`` / ``afterAdd`` (on the residual block, C = its output width) or
            ``after_conv1`` / ``after_conv2`` (inside the bottleneck, C = its inner width).
        default_position: what CONTEXT.POSITION ``default`` means for it.
        decay_group: name of its own weight-decay group, or None for the usual rules;
            the group's decay is SOLVER.WEIGHT_DECAY times ``CONTEXT.<GROUP>.WEIGHT_DECAY_MULT``.
        choices: config keys the block reads -> their allowed values.
        selectable: False for a block placed by its own section (the non-local block,
            placed by NONLOCAL.LOCATION), which CONTEXT.TYPE cannot name.
    """

    build: Callable
    module: type
    positions: tuple = ("after1x1", "afterAdd")
    default_position: str = "after1x1"
    decay_group: Optional[str] = None
    choices: Mapping[str, tuple] = field(default_factory=dict)
    selectable: bool = True


BLOCKS = Registry("context block", "video_gc.models.blocks")
ARCHS = Registry("arch", "video_gc.models.arch")
DEPTHS = Registry("ResNet depth", "video_gc.models.arch")
WEIGHT_FORMATS = Registry("checkpoint format", "video_gc.models.weights.formats")
INFERENCE_MODES = Registry("inference mode", "video_gc.inference.modes")
