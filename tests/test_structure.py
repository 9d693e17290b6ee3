"""The package's structure: layered imports without cycles, and a block added by one registry line."""

import ast
import os

import pytest
import torch
from torch import nn

from video_gc.config import ConfigError, load_config
from video_gc.inference import fuse_for_inference
from video_gc.models import build_model
from video_gc.registry import BLOCKS, BlockSpec

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "video_gc")

# Each part of the package and its layer: a module may import its own part and lower layers only.
LAYERS = {
    "registry": 0, "utils": 0,
    "config": 1,
    "models": 2, "data": 2,
    "prep": 3, "inference": 3,
    "engine": 4,
    "analysis": 5, "export": 5, "features": 5,
    "bench": 6, "demo": 6,  # the model benchmark times the ONNX export too
}


def _modules() -> dict:
    """module name -> file path for every module of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _imports(module: str, path: str, modules: dict) -> set:
    """The package modules that ``module`` imports anywhere in its file (function bodies too)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import name" imports the submodule pkg.name when there is one.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _modules()} - {""}
    assert parts == set(LAYERS), "give a new part of video_gc a layer in LAYERS"


def test_lower_layers_never_import_higher_ones():
    upward = sorted(f"{src} -> {dst}" for src, targets in _graph().items() for dst in targets
                    if _part(src) and _part(dst) and _part(src) != _part(dst)
                    and LAYERS[_part(dst)] >= LAYERS[_part(src)])
    assert not upward


def test_no_import_cycle_between_modules():
    graph = _graph()
    state: dict = {}
    cycles = []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles


def test_the_walk_sees_real_edges():
    # Guards the checks above against a walker that finds nothing.
    graph = _graph()
    assert "video_gc.registry" in graph["video_gc.config"]
    assert "video_gc.models.layout" in graph["video_gc.models.blocks.global_context"]
    assert "video_gc.inference" in graph["video_gc.engine.test"]


class _ToyScale(nn.Module):
    """A learned per-channel scale, y = x * s, initialised to the identity."""

    is_context_block = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@pytest.fixture
def toy_block():
    BLOCKS.register("toy", BlockSpec(build=lambda context_cfg, dim, num_frames: _ToyScale(dim), module=_ToyScale,
                                     positions=("afterAdd",), default_position="afterAdd"))
    try:
        yield
    finally:
        BLOCKS.unregister("toy")


def test_a_new_block_is_one_registry_entry(toy_block):
    opts = ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4"]
    location = ["CONTEXT.LOCATION", "[[0], [1, 3], [], [2]]"]
    plain = build_model(load_config(None, opts))
    cfg = load_config(None, opts + ["CONTEXT.TYPE", "toy"] + location)
    model = build_model(cfg).eval()
    placed = {name: m.scale.shape[0] for name, m in model.named_modules() if isinstance(m, _ToyScale)}
    # afterAdd: on the residual block's output, width 4 * 4 * 2^stage.
    assert placed == {"res2.0.context": 16, "res3.1.context": 32, "res3.3.context": 32, "res5.2.context": 128}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) - count(plain) == sum(placed.values())
    # The config validates the new block's positions from its registry entry.
    with pytest.raises(ConfigError, match="CONTEXT.POSITION: invalid value 'after1x1'; allowed values: default, afterAdd"):
        load_config(None, opts + ["CONTEXT.TYPE", "toy", "CONTEXT.POSITION", "after1x1"] + location)
    # The inference rewrite keeps it as one call (found by its is_context_block attribute) and stays exact.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _ToyScale):
                m.scale.uniform_(0.5, 1.5)
        fused = fuse_for_inference(model)
        calls = [n.target for n in fused.graph.nodes if n.op == "call_module"
                 and isinstance(fused.get_submodule(n.target), _ToyScale)]
        assert len(calls) == 4
        x = torch.randn(2, 3, 4, 32, 32)
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_unknown_block_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="CONTEXT.TYPE: invalid value 'toy'; allowed values: none, custom, gc"):
        load_config(None, ["CONTEXT.TYPE", "toy"])


class _ToyChecked(nn.Module):
    """A registered block whose forward fx cannot trace (a check on the input's shape)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.full((dim, 1, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.dim:
            raise ValueError("wrong width")
        return x * self.scale


def test_a_registered_block_stays_one_call_in_the_rewrite_without_the_attribute():
    BLOCKS.register("toy_checked", BlockSpec(build=lambda cfg, dim, frames: _ToyChecked(dim), module=_ToyChecked))
    try:
        cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4",
                                 "CONTEXT.TYPE", "toy_checked", "CONTEXT.LOCATION", "[[0], [], [], []]"])
        model = build_model(cfg).eval()
        with torch.no_grad():
            fused = fuse_for_inference(model)
            x = torch.randn(1, 3, 4, 32, 32)
            torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)
        assert any(isinstance(m, _ToyChecked) for m in fused.modules())
    finally:
        BLOCKS.unregister("toy_checked")
