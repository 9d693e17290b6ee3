"""The analysis and visualisation runs behind tools/analyze_context.py and tools/visualize_context.py.

Videos come from the data pipeline's deterministic evaluation clip: the ``val`` item (one
centre clip, short side and centre crop ``DATA.TEST_CROP_SIZE``). ``--split test`` reads
test.csv (or train.csv) through the same val-mode item (one centre clip, not the 30 test views), so
every split gives one deterministic clip per video.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import torch

from . import context_stats as cs
from .hooks import ATTENTION_POOLING, GATE, NONLOCAL, ContextRecorder

__all__ = ["load_analysis_model", "run_analysis", "format_table", "run_visualization", "analyse_run"]

JSD_INSTANTIATIONS = ("gaussian", "embedded_gaussian")
STAT_KEYS = ("input_cosine", "output_cosine", "attention_cosine", "attention_jsd")


def _device(cfg) -> torch.device:
    return torch.device("cuda") if cfg.NUM_GPUS > 0 and torch.cuda.is_available() else torch.device("cpu")


def load_analysis_model(cfg, checkpoint: str | None = None):
    """(model in eval mode on its device, a sentence saying which weights it has)."""
    from video_gc.engine.checkpoint import load_model_state, read_checkpoint
    from video_gc.models import build_model

    model = build_model(cfg)
    path = checkpoint or cfg.TEST.CHECKPOINT_FILE_PATH
    if path:
        load_model_state(model, read_checkpoint(path), path)
        source = f"weights from {path}" + ("" if checkpoint else " (TEST.CHECKPOINT_FILE_PATH)")
    else:
        source = ("random initialisation: no --checkpoint and TEST.CHECKPOINT_FILE_PATH is empty "
                  "(NL outputs are exactly 0 while their BN gamma is 0, so output_cosine is undefined)")
    return model.to(_device(cfg)).eval(), source


def _eval_dataset(cfg, split: str):
    """The val-mode dataset of ``split`` (see the module docstring)."""
    from video_gc.data import build_dataset

    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; choose train, val or test")
    dataset = build_dataset(cfg, split)
    # Read with the val item: one centre clip, centre crop (no augmentation, no 30 views).
    dataset.split, dataset.num_clips, dataset.num_crops = "val", 1, 1
    return dataset


def _clips(cfg, split: str, num_videos: int, batch_size: int):
    """Batches [B, 3, T, H, W] of the first ``num_videos`` videos that decode, with their indices."""
    dataset = _eval_dataset(cfg, split)
    batch, indices, failed = [], [], []
    for index in range(len(dataset)):
        if len(indices) + len(batch) >= num_videos:
            break
        item = dataset[index]
        if item.get("failed"):
            failed.append(item["failed"])
            continue
        batch.append((item["inputs"], index))
        if len(batch) == batch_size:
            yield torch.stack([b[0] for b in batch]), [b[1] for b in batch]
            indices += [b[1] for b in batch]
            batch = []
    if batch:
        yield torch.stack([b[0] for b in batch]), [b[1] for b in batch]
    for f in failed:
        print(f"skipped undecodable video: {f}")


class _Mean:
    """Running mean over videos of per-video values; NaN (undefined) values are counted apart."""

    def __init__(self):
        self.total, self.count, self.undefined = 0.0, 0, 0

    def add(self, values: torch.Tensor) -> None:
        values = values.double().cpu()
        ok = ~torch.isnan(values)
        self.total += values[ok].sum().item()
        self.count += int(ok.sum())
        self.undefined += int((~ok).sum())

    def value(self):
        return self.total / self.count if self.count else None


def _nonlocal_update(acc: dict, rec, *, exact: bool, num_queries: int | None, generator) -> None:
    att = rec.tensors["attention"]
    nq, nk = att.shape[1:]
    entry = acc.setdefault(rec.name, {"instantiation": rec.instantiation, "num_positions": nq, "num_keys": nk,
                                      "key_grid": list(rec.key_grid), "grid": list(rec.grid),
                                      **{k: _Mean() for k in STAT_KEYS}, "num_queries": nq})
    entry["input_cosine"].add(cs.mean_cosine_distance(cs.positions_last(rec.tensors["input"])))
    entry["output_cosine"].add(cs.mean_cosine_distance(cs.positions_last(rec.tensors["output"])))
    entry["attention_cosine"].add(cs.mean_cosine_distance(att))
    if rec.instantiation in JSD_INSTANTIATIONS:
        cs.check_distributions(att, rec.name)
        used = nq if exact else min(nq, num_queries or cs.default_num_queries(nq, nk))
        entry["num_queries"] = used
        idx = cs.sample_queries(nq, used, generator=generator, device=att.device)
        entry["attention_jsd"].add(cs.mean_jsd(att, idx))


def _summarise(nonlocal_acc: dict, pooling: dict, gates: dict) -> dict:
    blocks = {}
    for name, entry in nonlocal_acc.items():
        out = {k: (entry[k].value() if isinstance(entry[k], _Mean) else entry[k]) for k in entry}
        undefined = {k: entry[k].undefined for k in STAT_KEYS if entry[k].undefined}
        if undefined:
            out["undefined_videos"] = undefined
        blocks[name] = out
    mean = {}
    for key in STAT_KEYS:
        vals = [b[key] for b in blocks.values() if b[key] is not None]
        mean[key] = sum(vals) / len(vals) if vals else None
    mean["num_blocks"] = len(blocks)
    pooled = {name: {k: (v.value() if isinstance(v, _Mean) else v) for k, v in e.items()}
              for name, e in pooling.items()}
    gate_stats = {name: {"block_type": e["block_type"], **cs.gate_distribution(torch.cat(e["values"]))}
                  for name, e in gates.items()}
    return {"nonlocal_blocks": blocks, "mean": mean, "attention_pooling_blocks": pooled, "gate_blocks": gate_stats}


def run_analysis(cfg, *, checkpoint: str | None = None, num_videos: int = 16, split: str = "val",
                 output_dir: str | None = None, exact: bool = False, num_queries: int | None = None,
                 batch_size: int = 2, seed: int = 0) -> dict:
    """GCNet Table 1 statistics of every NL block (plus GC/SNL entropies and CGD/NA gates).

    Writes OUTPUT/context_stats.json (``output_dir`` or cfg.OUTPUT_DIR) and returns its content.
    """
    if num_videos < 1:
        raise ValueError(f"--num-videos must be >= 1, got {num_videos}")
    model, source = load_analysis_model(cfg, checkpoint)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    nonlocal_acc, pooling, gates = {}, {}, {}
    seen = 0
    with ContextRecorder(model) as recorder, torch.no_grad():
        if not recorder.blocks:
            raise ValueError("the model has no context block (NONLOCAL.LOCATION and CONTEXT.TYPE are empty)")
        for clips, _ in _clips(cfg, split, num_videos, batch_size):
            recorder.clear()
            model(clips.to(device))
            for rec in recorder.complete().values():
                if rec.kind == NONLOCAL:
                    _nonlocal_update(nonlocal_acc, rec, exact=exact, num_queries=num_queries, generator=generator)
                elif rec.kind == ATTENTION_POOLING:
                    e = pooling.setdefault(rec.name, {"block_type": rec.block_type, "grid": list(rec.grid),
                                                      "num_positions": rec.tensors["alpha"].shape[-1]})
                    for key, values in cs.attention_entropy(rec.tensors["alpha"]).items():
                        e.setdefault(key, _Mean()).add(values)
                elif rec.kind == GATE:
                    gates.setdefault(rec.name, {"block_type": rec.block_type, "values": []})["values"].append(
                        rec.tensors["gate"].cpu())
            seen += clips.shape[0]
    if seen == 0:
        raise ValueError(f"no video of split {split!r} could be decoded ({cfg.DATA.PATH_TO_DATA_DIR})")
    result = {"weights": source, "split": split, "num_videos": seen, "exact": exact,
              "distance": "avg over all (i, j) incl. i = j: 1/N^2 sum_ij dist(v_i, v_j) (GCNet Sec. 3.2)",
              **_summarise(nonlocal_acc, pooling, gates)}
    folder = output_dir or cfg.OUTPUT_DIR
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "context_stats.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    result["path"] = path
    return result


def _fmt(value, width=8) -> str:
    return f"{'-':>{width}}" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:>{width}.4f}"


def format_table(result: dict) -> str:
    """GCNet Table 1 layout: per NL block and the mean, then GC/SNL entropies and gate distributions."""
    lines = [f"{result['num_videos']} videos of split '{result['split']}'; {result['weights']}"]
    blocks = result["nonlocal_blocks"]
    if blocks:
        lines += ["", f"{'block':<22}{'instantiation':<20}{'cosine distance':^26}{'JSD-att':>9}{'queries':>14}",
                  f"{'':<42}{'input':>8}{'output':>9}{'att':>9}"]
        for name, b in blocks.items():
            lines.append(f"{name:<22}{b['instantiation'] or '':<20}{_fmt(b['input_cosine'])} "
                         f"{_fmt(b['output_cosine'])} {_fmt(b['attention_cosine'])} {_fmt(b['attention_jsd'])}"
                         f"{str(b['num_queries']) + '/' + str(b['num_positions']):>14}")
        m = result["mean"]
        lines.append(f"{'mean over blocks':<42}{_fmt(m['input_cosine'])} {_fmt(m['output_cosine'])} "
                     f"{_fmt(m['attention_cosine'])} {_fmt(m['attention_jsd'])}")
        lines.append("('-' = undefined: JSD needs softmax rows; cosine needs non-zero vectors. queries = query "
                     "positions used for JSD / all positions; cosine always uses all)")
    if result["attention_pooling_blocks"]:
        lines += ["", f"{'attention pooling':<22}{'type':<20}{'entropy':>9}{'H/lnN':>8}{'max w':>9}{'max*N':>8}"]
        for name, b in result["attention_pooling_blocks"].items():
            lines.append(f"{name:<22}{b['block_type']:<20}{_fmt(b['entropy'], 9)}{_fmt(b['normalized_entropy'])}"
                         f"{_fmt(b['max_weight'], 9)}{_fmt(b['max_weight_ratio'])}")
    if result["gate_blocks"]:
        lines += ["", f"{'channel gates':<22}{'type':<26}{'mean':>7}{'std':>7}{'p5':>7}{'p50':>7}{'p95':>7}"]
        for name, g in result["gate_blocks"].items():
            lines.append(f"{name:<22}{g['block_type']:<26}" + "".join(
                f"{g[k]:>7.3f}" for k in ("mean", "std", "p5", "p50", "p95")))
    return "\n".join(lines)


def _single_video_dataset(cfg, video: str):
    """A val-mode dataset over one file, through a one-line list in a temporary folder."""
    from video_gc.data import build_dataset

    if not os.path.isfile(video):
        raise FileNotFoundError(f"video not found: {video}")
    folder = tempfile.mkdtemp(prefix="video_gc_vis_")
    with open(os.path.join(folder, "val.csv"), "w", encoding="utf-8") as handle:
        handle.write(f"{os.path.abspath(video)}{cfg.DATA.PATH_LABEL_SEPARATOR}0\n")
    local = cfg.clone()
    local.defrost()
    local.DATA.PATH_TO_DATA_DIR, local.DATA.PATH_PREFIX = folder, ""
    return build_dataset(local, "val")


def run_visualization(cfg, *, output_dir: str, checkpoint: str | None = None, video: str | None = None,
                      index: int = 0, split: str = "val", block: str | None = None, queries: int = 4,
                      width_px: int = 1600) -> list[str]:
    """PNGs of one video: NL attention maps of ``queries`` query points, GC/SNL alpha maps.

    ``block`` picks one block (default: every NL and attention-pooling block). Returns the paths.
    """
    from .visualize import clip_to_frames, default_query_points, plot_attention_pooling, plot_nonlocal_attention

    model, source = load_analysis_model(cfg, checkpoint)
    dataset = _single_video_dataset(cfg, video) if video else _eval_dataset(cfg, split)
    if not video and not 0 <= index < len(dataset):
        raise IndexError(f"--index {index} is outside the {len(dataset)} videos of split {split!r}")
    item = dataset[0 if video else index]
    if item.get("failed"):
        raise ValueError(f"cannot decode the video: {item['failed']}")
    clip = item["inputs"]
    recorder = ContextRecorder(model, [block] if block else None)
    with recorder, torch.no_grad():
        model(clip[None].to(next(model.parameters()).device))
    frames = clip_to_frames(clip, cfg.DATA.MEAN, cfg.DATA.STD)
    print(f"visualising {video or dataset.paths[index]} with {source}")
    paths = []
    for name, rec in recorder.complete().items():
        target = os.path.join(output_dir, f"{name.replace('.', '_')}.png")
        if rec.kind == NONLOCAL:
            points = default_query_points(rec.grid, queries)
            paths.append(plot_nonlocal_attention(frames, rec.tensors["attention"][0], rec.grid, rec.key_grid,
                                                 points, target, block=name, instantiation=rec.instantiation,
                                                 width_px=width_px))
        elif rec.kind == ATTENTION_POOLING:
            paths.append(plot_attention_pooling(frames, rec.tensors["alpha"][0], rec.grid, target, block=name,
                                                block_type=rec.block_type, width_px=width_px))
    if not paths:
        raise ValueError(f"no NL or attention-pooling block to draw (block={block!r}); CGD/NA gates have no map")
    return paths


def analyse_run(cfg, checkpoint: str, output_dir: str, *, num_videos: int = 16, split: str = "val",
                queries: int = 4) -> dict:
    """The statistics of a trained run (printed and written to ``output_dir``) and the attention
    pictures of the first video of ``split`` (``output_dir/pictures``).

    Returns the :func:`run_analysis` result plus ``pictures`` and ``checkpoint``.
    """
    result = run_analysis(cfg, checkpoint=checkpoint, num_videos=num_videos, split=split, output_dir=output_dir)
    print(format_table(result), flush=True)
    pictures = run_visualization(cfg, output_dir=os.path.join(output_dir, "pictures"), checkpoint=checkpoint,
                                 index=0, split=split, queries=queries)
    print("attention pictures: " + ", ".join(pictures), flush=True)
    return {**result, "pictures": pictures, "checkpoint": checkpoint}
