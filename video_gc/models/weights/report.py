"""What a weight import did, key by key."""

from __future__ import annotations

from dataclasses import dataclass, field


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


@dataclass
class LoadReport:
    """Outcome of loading a checkpoint into a model.

    ``loaded``: model keys copied as they are. ``inflated``: (key, checkpoint
    shape, model shape) of 2D kernels made 3D. ``affine_bn``: BN layers whose
    checkpoint holds only scale and bias (Caffe2), given mean 0 and var 1 - eps.
    ``new_head``: head keys left at their fresh init because the class count
    differs (or the checkpoint has no head). ``context_kept``: context-block keys
    left at their own init. ``missing``: other model keys the checkpoint lacks.
    ``unused``: checkpoint keys that map to nothing in the model. ``mismatched``:
    (key, checkpoint shape, model shape) left at init.
    """

    path: str
    source_format: str
    inflate_mode: str | None = None
    loaded: list[str] = field(default_factory=list)
    inflated: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    affine_bn: list[str] = field(default_factory=list)
    new_head: list[tuple[str, tuple, tuple | None]] = field(default_factory=list)
    context_kept: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """True when anything beyond the new head and the context blocks was not matched."""
        return bool(self.missing or self.unused or self.mismatched)

    def problems(self) -> list[str]:
        """One line per key that makes this a partial match."""
        lines = [f"model key not in checkpoint: {k}" for k in self.missing]
        lines += [f"checkpoint key not used: {k}" for k in self.unused]
        lines += [f"shape mismatch: {k}: checkpoint {_shape(s)} vs model {_shape(t)}" for k, s, t in self.mismatched]
        return lines

    def summary(self) -> dict:
        """Counts, for logs and checkpoint metadata."""
        return {
            "loaded": len(self.loaded),
            "inflated": len(self.inflated),
            "affine_bn": len(self.affine_bn),
            "new_head": len(self.new_head),
            "context_kept": len(self.context_kept),
            "missing": len(self.missing),
            "unused": len(self.unused),
            "mismatched": len(self.mismatched),
        }

    def format(self, verbose: bool = False) -> str:
        """A readable report; problems are always listed key by key, the rest when verbose."""
        mode = f", 2D kernels inflated by '{self.inflate_mode}'" if self.inflated else ""
        lines = [f"Weights from {self.path} (format: {self.source_format}{mode})"]
        lines.append(f"  loaded as is:        {len(self.loaded)} tensors")
        if verbose:
            lines += [f"    {k}" for k in self.loaded]
        lines.append(f"  inflated 2D -> 3D:   {len(self.inflated)} tensors")
        if verbose:
            lines += [f"    {k}: {_shape(s)} -> {_shape(t)}" for k, s, t in self.inflated]
        if self.affine_bn:
            lines.append(f"  affine-only BN (running mean 0, var 1 - eps): {len(self.affine_bn)} layers")
            if verbose:
                lines += [f"    {k}" for k in self.affine_bn]
        lines.append(f"  newly initialised:   {len(self.new_head) + len(self.missing)} tensors")
        for k, s, t in self.new_head:
            why = f"checkpoint {_shape(s)} vs model {_shape(t)}" if s is not None else "not in checkpoint"
            lines.append(f"    {k} (new head: {why})")
        lines += [f"    {k} (not in checkpoint)" for k in self.missing]
        lines.append(f"  context blocks kept at their init: {len(self.context_kept)} tensors")
        if verbose:
            lines += [f"    {k}" for k in self.context_kept]
        lines.append(f"  unused checkpoint keys: {len(self.unused)}")
        lines += [f"    {k}" for k in self.unused]
        lines.append(f"  shape mismatches (left at init): {len(self.mismatched)}")
        lines += [f"    {k}: checkpoint {_shape(s)} vs model {_shape(t)}" for k, s, t in self.mismatched]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
