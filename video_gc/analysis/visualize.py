"""Attention pictures: the video version of GCNet Figs. 1-2 (Cao et al., Sec. 3.2).

- ``plot_nonlocal_attention``: one row per query point, one column per key time step; each
  cell is the frame at that time with the query's attention over the key positions of that
  time overlaid as a heatmap. The query point is a filled star in the column of its own time
  and a hollow circle elsewhere. Rows share nothing: each has its own colour bar.
- ``plot_attention_pooling``: the query-independent alpha of a GC / SNL block over
  T x H x W, one column per time step, with the plain frames in a second row.

Key maps are upsampled bilinearly from their own grid (after the NL block's optional
max-pooling of the keys) to the frame size, so pooled and unpooled keys look alike.
Figures are drawn with matplotlib's Agg canvas (no pyplot, no display needed) at a fixed
pixel size: ``width_px`` wide (1600 by default), height from the number of rows.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "clip_to_frames",
    "default_query_points",
    "plot_nonlocal_attention",
    "plot_attention_pooling",
]

DPI = 100
_LABEL_IN = 1.1  # left margin for row labels
_CBAR_IN = 0.9  # right margin for a colour bar and its ticks
_ROW_TITLE_IN = 0.35  # space above each row for the column titles
_HEADER_IN = 0.7  # figure title
_FOOTER_IN = 0.15  # bottom margin, so the last row is not cut


def clip_to_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised clip [3, T, H, W] back to uint8 frames [T, H, W, 3]."""
    if clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"clip_to_frames: expected a clip [3, T, H, W], got {tuple(clip.shape)}")
    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    pixels = (clip.detach().float().cpu() * s + m).clamp(0, 1)
    return (pixels.permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)


def default_query_points(grid: Sequence[int], count: int) -> list[int]:
    """``count`` flat query indices in (t, h, w) order, spread over the grid.

    Points go round a ring at 1/4 of the frame from the centre, plus the centre itself,
    at the middle time step (the centre first).
    """
    t, h, w = grid
    if count < 1:
        raise ValueError(f"need at least one query point, got {count}")
    points = [(t // 2, h // 2, w // 2)]
    for k in range(max(0, count - 1)):
        angle = 2 * np.pi * k / max(1, count - 1) + np.pi / 4
        hh = int(np.clip(round(h / 2 - 0.5 + np.sin(angle) * h / 4), 0, h - 1))
        ww = int(np.clip(round(w / 2 - 0.5 + np.cos(angle) * w / 4), 0, w - 1))
        tt = (t // 2 + (k % 2)) % t if t > 1 else 0
        points.append((tt, hh, ww))
    flat = []
    for p in points:
        idx = (p[0] * h + p[1]) * w + p[2]
        if idx not in flat:
            flat.append(idx)
    # Small grids make ring points coincide: top up with evenly spaced other positions.
    total = t * h * w
    for idx in np.linspace(0, total - 1, num=min(count, total) * 2).round().astype(int).tolist():
        if len(flat) >= min(count, total):
            break
        if idx not in flat:
            flat.append(idx)
    return flat[:count]


def _frame_for_time(step: int, steps: int, num_frames: int) -> int:
    """The frame at the centre of feature time step ``step`` of ``steps``."""
    return min(num_frames - 1, int((step + 0.5) * num_frames / steps))


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[Tm, Hm, Wm] maps -> [Tm, H, W] (bilinear)."""
    up = F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)
    return up[0].numpy()


def _layout(rows: int, cols: int, frame_hw: tuple[int, int], width_px: int) -> tuple[float, float, float]:
    """(figure width in, height in, cell height in) for ``rows`` rows of ``cols`` frames."""
    width_in = width_px / DPI
    cell_w = (width_in - _LABEL_IN - _CBAR_IN) / cols
    if cell_w <= 0:
        raise ValueError(f"width_px={width_px} is too small for {cols} columns")
    cell_h = cell_w * frame_hw[0] / frame_hw[1]
    height_in = _HEADER_IN + rows * (cell_h + _ROW_TITLE_IN) + _FOOTER_IN
    # Whole pixels, so the PNG is exactly width_px x round(height).
    height_in = round(height_in * DPI) / DPI
    return width_in, height_in, cell_h


def _add_row(fig: Figure, row: int, cols: int, width_in: float, height_in: float, cell_h: float):
    """Axes for the cells of ``row`` and its colour bar, in figure coordinates."""
    cell_w = (width_in - _LABEL_IN - _CBAR_IN) / cols
    top = height_in - _HEADER_IN - row * (cell_h + _ROW_TITLE_IN) - _ROW_TITLE_IN
    bottom = (top - cell_h) / height_in
    axes = []
    for c in range(cols):
        left = (_LABEL_IN + c * cell_w) / width_in
        ax = fig.add_axes((left, bottom, cell_w / width_in * 0.98, cell_h / height_in))
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    cbar_left = (width_in - _CBAR_IN + 0.1) / width_in
    cax = fig.add_axes((cbar_left, bottom, 0.15 / width_in, cell_h / height_in))
    return axes, cax


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _query_xy(h: int, w: int, grid_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[float, float]:
    """Pixel centre of feature cell (h, w)."""
    return (w + 0.5) * frame_hw[1] / grid_hw[1] - 0.5, (h + 0.5) * frame_hw[0] / grid_hw[0] - 0.5


def plot_nonlocal_attention(frames: np.ndarray, attention: torch.Tensor, grid: Sequence[int],
                            key_grid: Sequence[int], queries: Sequence[int], path: str, *,
                            block: str, instantiation: str | None = None, width_px: int = 1600,
                            cmap: str = "jet", overlay_alpha: float = 0.5) -> str:
    """Attention maps of a few query points of one NL block, overlaid on the frames.

    Args:
        frames: uint8 [T_in, H, W, 3], the clip the block saw (``clip_to_frames``).
        attention: [Nq, Nk] attention of one video, queries over ``grid`` (T, H, W) and keys
            over ``key_grid`` (Tk, Hk, Wk), both in (t, h, w) order.
        queries: flat query indices (rows of ``attention``).
        path: PNG to write; block / instantiation name the block in the titles.
    """
    t, h, w = (int(v) for v in grid)
    tk, hk, wk = (int(v) for v in key_grid)
    attention = attention.detach().float().cpu()
    if attention.shape != (t * h * w, tk * hk * wk):
        raise ValueError(f"{block}: attention {tuple(attention.shape)} does not match query grid {grid} "
                         f"and key grid {key_grid}")
    bad = [q for q in queries if not 0 <= q < t * h * w]
    if bad:
        raise ValueError(f"{block}: query indices {bad} outside [0, {t * h * w})")
    frame_hw = frames.shape[1:3]
    cols = [_frame_for_time(s, tk, frames.shape[0]) for s in range(tk)]
    width_in, height_in, cell_h = _layout(len(queries), tk, frame_hw, width_px)
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    what = f" ({instantiation})" if instantiation else ""
    fig.suptitle(f"{block}{what}: attention of {len(queries)} query points over all "
                 f"{tk}x{hk}x{wk} key positions (T x H x W)", fontsize=13, y=1 - 0.2 / height_in)
    for row, q in enumerate(queries):
        qt, rem = divmod(q, h * w)
        qh, qw = divmod(rem, w)
        own_col = min(tk - 1, qt * tk // t)
        maps = _upsample(attention[q].view(tk, hk, wk), frame_hw)
        lo, hi = float(min(0.0, maps.min())), float(maps.max())
        hi = hi if hi > lo else lo + 1e-12
        axes, cax = _add_row(fig, row, tk, width_in, height_in, cell_h)
        qx, qy = _query_xy(qh, qw, (h, w), frame_hw)
        for col, ax in enumerate(axes):
            ax.imshow(frames[cols[col]])
            im = ax.imshow(maps[col], cmap=cmap, alpha=overlay_alpha, vmin=lo, vmax=hi)
            if col == own_col:
                ax.plot(qx, qy, marker="*", markersize=16, color="red", markeredgecolor="white")
            else:
                ax.plot(qx, qy, marker="o", markersize=9, fillstyle="none", color="red", markeredgewidth=2)
            ax.set_title(f"q{row + 1} keys at t={col} (frame {cols[col]})", fontsize=8)
        axes[0].set_ylabel(f"query {row + 1}\n(t={qt}, h={qh}, w={qw})", fontsize=9)
        cbar = fig.colorbar(im, cax=cax)
        cbar.ax.tick_params(labelsize=7)
        cbar.set_label("w_ij", fontsize=8)
    return _save(fig, path)


def plot_attention_pooling(frames: np.ndarray, alpha: torch.Tensor, grid: Sequence[int], path: str, *,
                           block: str, block_type: str | None = None, width_px: int = 1600,
                           cmap: str = "jet", overlay_alpha: float = 0.5) -> str:
    """The global attention-pooling weights alpha [T*H*W] of a GC / SNL block over the frames."""
    t, h, w = (int(v) for v in grid)
    alpha = alpha.detach().float().cpu().flatten()
    if alpha.numel() != t * h * w:
        raise ValueError(f"{block}: alpha has {alpha.numel()} weights, grid {grid} has {t * h * w} positions")
    frame_hw = frames.shape[1:3]
    cols = [_frame_for_time(s, t, frames.shape[0]) for s in range(t)]
    maps = _upsample(alpha.view(t, h, w), frame_hw)
    width_in, height_in, cell_h = _layout(2, t, frame_hw, width_px)
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    what = f" ({block_type})" if block_type else ""
    peak = alpha.max().item() * alpha.numel()
    fig.suptitle(f"{block}{what}: attention-pooling weights alpha over T x H x W = {t}x{h}x{w} "
                 f"(shared by all query positions; max = {peak:.1f}x uniform)", fontsize=13,
                 y=1 - 0.2 / height_in)
    axes, cax = _add_row(fig, 0, t, width_in, height_in, cell_h)
    for col, ax in enumerate(axes):
        ax.imshow(frames[cols[col]])
        im = ax.imshow(maps[col], cmap=cmap, alpha=overlay_alpha, vmin=0.0, vmax=float(maps.max()))
        ax.set_title(f"alpha, t={col} (frame {cols[col]})", fontsize=8)
    axes[0].set_ylabel("alpha", fontsize=9)
    cbar = fig.colorbar(im, cax=cax)
    cbar.ax.tick_params(labelsize=7)
    cbar.set_label("alpha_j", fontsize=8)
    plain, spare = _add_row(fig, 1, t, width_in, height_in, cell_h)
    spare.set_axis_off()
    for col, ax in enumerate(plain):
        ax.imshow(frames[cols[col]])
        ax.set_title(f"frame {cols[col]}", fontsize=8)
    plain[0].set_ylabel("input", fontsize=9)
    return _save(fig, path)
