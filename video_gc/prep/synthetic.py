"""A small, seeded, offline video dataset in the same layout as the real ones.

Each class is a shape with a motion, e.g. "square moving right". Classes come in
pairs that share the shape and the motion axis and differ only in the direction of
time: the second class of a pair is the first one's clip played backwards
("square moving left", "bar rotating counter-clockwise", "disc shrinking", ...).
Both classes draw their nuisances (position, speed, size, colours, background
texture, pixel noise) from the same distribution, so the bag of frames of a clip
says nothing about which class of its pair it belongs to: a model has to use the
order of the frames. The shapes, on the other hand, separate the pairs by appearance.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np

from video_gc.data.lists import write_classids, write_list
from video_gc.prep.lists import PrepError, safe_name
from video_gc.prep.parallel import imap_progress
from video_gc.prep.probe import probe_video
from video_gc.utils.io import atomic_write_text
from video_gc.utils.video_io import write_video

# Motion axes: (name when played forward, name when played backwards).
MOTIONS = {
    "horizontal": ("moving right", "moving left"),
    "vertical": ("moving down", "moving up"),
    "rotation": ("rotating clockwise", "rotating counter-clockwise"),
    "scale": ("growing", "shrinking"),
}
# Shape x motion pairs, ordered so the first few pairs already differ in both shape and motion.
# A disc looks the same at every angle, so it never rotates.
PAIRS = (
    ("square", "horizontal"), ("bar", "rotation"), ("disc", "scale"), ("triangle", "vertical"),
    ("disc", "horizontal"), ("triangle", "rotation"), ("square", "scale"), ("bar", "vertical"),
    ("cross", "horizontal"), ("cross", "rotation"), ("triangle", "scale"), ("square", "vertical"),
    ("bar", "horizontal"), ("square", "rotation"), ("bar", "scale"), ("disc", "vertical"),
    ("triangle", "horizontal"), ("cross", "scale"), ("cross", "vertical"),
)
MAX_CLASSES = 2 * len(PAIRS)
META_FILE = "synthetic.json"
# The demo's videos (WIDTH x HEIGHT, FRAMES at 30 fps); the GPU check trains on the same.
DEMO_VIDEO_SIZE = (80, 64)
DEMO_VIDEO_FRAMES = 48


def class_names(num_classes: int) -> list[str]:
    """Readable class names; class 2k+1 is class 2k played backwards."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise PrepError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    names = []
    for shape, motion in PAIRS:
        names.extend(f"{shape} {m}" for m in MOTIONS[motion])
    return names[:num_classes]


def _shape_alpha(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Soft (anti-aliased) coverage in [0, 1] of a shape of radius r at object coordinates u, v."""
    if shape == "disc":
        inside = r - np.sqrt(u * u + v * v)
    elif shape == "square":
        inside = 0.8 * r - np.maximum(np.abs(u), np.abs(v))
    elif shape == "bar":
        inside = np.minimum(r - np.abs(u), 0.3 * r - np.abs(v))
    elif shape == "cross":
        arm_u = np.minimum(r - np.abs(u), 0.3 * r - np.abs(v))
        arm_v = np.minimum(r - np.abs(v), 0.3 * r - np.abs(u))
        inside = np.maximum(arm_u, arm_v)
    elif shape == "triangle":
        # Three half-planes with outward normals 120 degrees apart (inradius r / 2).
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        inside = np.min([0.5 * r - (u * np.cos(a) + v * np.sin(a)) for a in angles], axis=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(inside + 0.5, 0.0, 1.0)


def render_clip(class_index: int, rng: np.random.Generator, num_frames: int = 32,
                height: int = 112, width: int = 112) -> np.ndarray:
    """Render one clip of a class as uint8 frames (T, H, W, 3).

    The random draws do not depend on the direction of time, so with the same
    ``rng`` state the clip of class 2k+1 is exactly the clip of class 2k reversed.
    """
    shape, axis = PAIRS[class_index // 2]
    backwards = class_index % 2 == 1
    t = np.linspace(0.0, 1.0, num_frames)[:, None, None]
    side = min(height, width)
    radius = np.full_like(t, rng.uniform(0.12, 0.18) * side)
    angle = np.full_like(t, rng.uniform(0.0, 2 * np.pi))
    margin = 0.2 * side
    cx = np.full_like(t, rng.uniform(margin, width - margin))
    cy = np.full_like(t, rng.uniform(margin, height - margin))
    if axis == "horizontal":
        travel = rng.uniform(0.35, 0.55) * width
        cx = rng.uniform(margin, width - margin - travel) + travel * t
    elif axis == "vertical":
        travel = rng.uniform(0.35, 0.55) * height
        cy = rng.uniform(margin, height - margin - travel) + travel * t
    elif axis == "rotation":
        # At most ~0.07 rad per frame, so even a stride of 8 frames stays below the
        # 45-degree symmetry of the square and the cross: the direction stays visible.
        angle = angle + rng.uniform(0.04, 0.07) * (num_frames - 1) * t
        # Turn about a pivot well off the centre, like a clock hand: the shape sweeps
        # an arc as long as a translation's travel, so the direction survives the
        # coarse resolution of a small network's late (temporal) stages, where a spin
        # in place is a sub-pixel change.
        radius = np.full_like(t, rng.uniform(0.09, 0.12) * side)
        arm = rng.uniform(0.22, 0.28) * side
        reach = arm + radius[0, 0, 0] + 1.0
        px = rng.uniform(reach, width - reach)
        py = rng.uniform(reach, height - reach)
        cx = px + arm * np.cos(angle)
        cy = py + arm * np.sin(angle)
    elif axis == "scale":
        small = rng.uniform(0.07, 0.1) * side
        radius = small * (1.0 + rng.uniform(1.2, 1.8) * t)
    # A small random wobble, so that no object moves on a perfectly straight line.
    cx = cx + rng.uniform(-1.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)
    cy = cy + rng.uniform(-1.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    background = np.empty((height, width, 3))
    base = rng.uniform(40, 200, size=3)
    background[:] = base
    for _ in range(3):  # a few random gratings as texture
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.02, 0.15), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        background += wave[..., None] * rng.uniform(5, 25, size=3)
    color = rng.uniform(0, 255, size=3)
    while np.abs(color - base).max() < 90:  # keep the object visible against the background
        color = rng.uniform(0, 255, size=3)
    # float32 from here on: the per-pixel work dominates the generator's run time.
    noise = rng.standard_normal((num_frames, height, width, 3), dtype=np.float32)
    noise *= np.float32(rng.uniform(2.0, 8.0))

    du, dv = xx[None] - cx, yy[None] - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = du * cos + dv * sin, -du * sin + dv * cos
    alpha = _shape_alpha(shape, u, v, radius)[..., None].astype(np.float32)
    background, color = background.astype(np.float32), color.astype(np.float32)
    frames = noise + background[None]
    frames += alpha * (color - background[None])
    frames = np.clip(np.rint(frames, out=frames), 0, 255, out=frames).astype(np.uint8)
    return frames[::-1].copy() if backwards else frames


@dataclass(frozen=True)
class SyntheticOptions:
    num_classes: int = 8
    videos_per_class: int = 40
    seed: int = 0
    num_frames: int = 32
    fps: float = 30.0
    width: int = 112
    height: int = 112
    val_fraction: float = 0.15
    test_fraction: float = 0.15


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n_val + n_test > n:
        raise PrepError(f"val_fraction + test_fraction leave no training videos out of {n}")
    return n - n_val - n_test, n_val, n_test


def _video_rel(names: list[str], class_index: int, video_index: int) -> str:
    folder = safe_name(names[class_index])
    return f"videos/{folder}/{folder}_{video_index:04d}.mp4"


def _make_one(job: tuple) -> tuple[str, str]:
    """Render and encode one video unless a decodable file is already there."""
    path, opts_dict, class_index, video_index = job
    opts = SyntheticOptions(**opts_dict)
    if probe_video(path, decode_all=False).ok:
        return path, "skipped"
    rng = np.random.default_rng([opts.seed, class_index, video_index])
    frames = render_clip(class_index, rng, opts.num_frames, opts.height, opts.width)
    write_video(path, frames, fps=opts.fps, deterministic=True)  # same seed, same bytes
    return path, "written"


def make_synthetic_dataset(output: str, num_classes: int = 8, videos_per_class: int = 40,
                           seed: int = 0, num_frames: int = 32, fps: float = 30.0,
                           size: tuple[int, int] = (112, 112), val_fraction: float = 0.15,
                           test_fraction: float = 0.15, workers: int = 1,
                           overwrite: bool = False, verbose: bool = True) -> dict:
    """Write the synthetic dataset to ``output`` and return a summary dict.

    ``size`` is (width, height), both even. Layout: ``output/videos/<class>/*.mp4``,
    ``output/{train,val,test}.csv`` (``videos/<class>/<file>.mp4 <label>``),
    ``output/classids.json`` and ``output/synthetic.json`` (the options). Running it
    again with the same options only checks the files; other options on a folder that
    already holds a synthetic dataset are an error unless ``overwrite``.
    """
    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise PrepError(f"size must be even and at least 16x16, got {width}x{height}")
    if num_frames < 2 or videos_per_class < 1 or fps <= 0:
        raise PrepError("need num_frames >= 2, videos_per_class >= 1 and fps > 0")
    opts = SyntheticOptions(num_classes, videos_per_class, seed, num_frames, float(fps), width, height,
                            val_fraction, test_fraction)
    names = class_names(num_classes)
    counts = _split_counts(videos_per_class, val_fraction, test_fraction)
    meta_path = os.path.join(output, META_FILE)
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                previous = json.load(f)
        except json.JSONDecodeError as err:
            raise PrepError(f"{meta_path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}); "
                            "delete it or pass --overwrite") from None
        if previous != asdict(opts):
            if not overwrite:
                raise PrepError(f"{output} already holds a synthetic dataset made with other options "
                                f"({meta_path}: {previous}); pass --overwrite or use another folder")
            shutil.rmtree(os.path.join(output, "videos"), ignore_errors=True)
            os.remove(meta_path)

    start = time.time()
    jobs = [(os.path.join(output, _video_rel(names, c, i)), asdict(opts), c, i)
            for c in range(num_classes) for i in range(videos_per_class)]
    written = sum(status == "written" for _, status in
                  imap_progress(_make_one, jobs, workers=workers, desc="synthetic"))

    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for c in range(num_classes):
        order = np.random.default_rng([seed, c, 2**31]).permutation(videos_per_class)
        n_train, n_val, _ = counts
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        for split, indices in parts.items():
            splits[split].extend((_video_rel(names, c, int(i)), c) for i in sorted(indices))
    for split, entries in splits.items():
        write_list(os.path.join(output, f"{split}.csv"), entries)
    write_classids(os.path.join(output, "classids.json"), names)
    atomic_write_text(meta_path, json.dumps(asdict(opts), indent=1) + "\n")

    summary = {"output": output, "classes": num_classes, "videos": len(jobs), "written": written,
               "skipped": len(jobs) - written, "seconds": round(time.time() - start, 2),
               **{split: len(entries) for split, entries in splits.items()}}
    if verbose:
        if written == 0:
            print(f"nothing to do: all {len(jobs)} videos in {output} already exist and decode")
        print(f"synthetic dataset in {output}: {num_classes} classes, {len(jobs)} videos "
              f"({written} written, {len(jobs) - written} already there) in {summary['seconds']} s; "
              f"train {summary['train']} / val {summary['val']} / test {summary['test']}; "
              f"{width}x{height}, {num_frames} frames at {fps:g} fps")
    return summary
