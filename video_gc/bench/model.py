"""Throughput of video_gc's models against PyTorchVideo's, same weights, same input,
one process (``tools/benchmark_model.py``).

The two models run interleaved (ours, theirs, ours, theirs, ...) after warm-up
runs and each side reports the median (:mod:`video_gc.bench.timing`).

Weights: a PyTorchVideo checkpoint (``weights``; e.g. the model zoo's
SLOW_8x8_R50.pyth) or, without one, PyTorchVideo's own random init with BatchNorm
statistics measured on random clips (so every layer matters and the logits have a
realistic spread). Either way the file goes into PyTorchVideo's model with
``load_state_dict`` and into ours through the weights importer
(:func:`video_gc.models.weights.import_weights`, format ``pytorchvideo``).

On the CPU a third side, ONNX Runtime, runs our plain fp32 eval model exported with
:func:`video_gc.export.export_model` (checked there against PyTorch), CPU provider, as
many intra-op threads as torch uses; it is timed in the same interleaved rounds and its
logits are compared with ours. Without onnxruntime the row is skipped, with a line saying so.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from video_gc.inference import prepare_for_inference, resolve_mode
from video_gc.models import build_model
from video_gc.models.weights import PYTORCHVIDEO_BUILDERS, import_weights
from video_gc.utils.io import atomic_save, safe_torch_load

from .timing import interleaved_timings, sync

# Names of the last BN of a residual branch: PyTorchVideo's and ours.
RESIDUAL_LAST_BN = ("norm_c", "c_bn")
# Logits of the fp32 fast paths must match PyTorchVideo's this closely.
FP32_TOLERANCE = 1e-4


def head_pool_size(crop: int) -> int:
    """Side of the res5 feature map for a square crop (stem stride 4, then three stride-2 stages)."""
    side = (crop + 2 * 3 - 7) // 2 + 1      # conv1 7x7 / 2
    side = (side + 2 * 1 - 3) // 2 + 1      # max-pool 3x3 / 2
    for _ in range(3):                      # res3..res5, 3x3 / 2
        side = (side + 2 * 1 - 3) // 2 + 1
    return side


def build_pytorchvideo_model(
    arch: str, *, depth: int, num_frames: int, crop: int, num_classes: int, width: int = 64
) -> nn.Module:
    """PyTorchVideo's slow_r50 / c2d_r50 (``create_resnet`` with the hub's settings) for
    this clip size (only the head's average-pool kernel depends on it) and stem width."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytorchvideo's own torch.jit.script use
        from pytorchvideo.models.resnet import create_resnet

    if arch not in PYTORCHVIDEO_BUILDERS or arch == "i3d":
        raise ValueError(f"MODEL.ARCH {arch!r} has no PyTorchVideo counterpart to benchmark; allowed values: slow, c2d")
    side = head_pool_size(crop)
    kwargs = dict(model_depth=depth, model_num_class=num_classes, stem_conv_kernel_size=(1, 7, 7), stem_dim_out=width)
    if arch == "slow":
        return create_resnet(head_pool_kernel_size=(num_frames, side, side), **kwargs)
    return create_resnet(
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=((1, 1, 1),) * 4,
        head_pool_kernel_size=(num_frames // 2, side, side),
        **kwargs,
    )


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, clips: torch.Tensor) -> None:
    """Random BN affine parameters, then running statistics measured on ``clips``:
    a random-weight network whose every layer changes the logits."""
    generator = torch.Generator().manual_seed(0)
    bns = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name, bn in bns:
        # A residual branch's last BN (zero-init gamma) stays small in trained ResNets.
        low, high = (0.0, 0.3) if name.endswith(RESIDUAL_LAST_BN) else (0.5, 1.0)
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) * (high - low) + low)
        bn.bias.copy_(torch.rand(bn.bias.shape, generator=generator) * 0.2 - 0.1)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    model.train()
    model(clips)
    model.eval()


def shared_weights_file(theirs: nn.Module, directory: str, *, crop: int, frames: int,
                        device: torch.device | str = "cpu") -> str:
    """Calibrate PyTorchVideo's random init (on ``device``) and write it as a PyTorchVideo checkpoint.

    The calibration clips are at most 112 px square, unless their res5 map would be smaller
    than the head's pooling window (built for ``crop``): then they are ``crop`` px."""
    size = min(crop, 112)
    if head_pool_size(size) < head_pool_size(crop):
        size = crop
    clips = torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    home = next(theirs.parameters()).device
    calibrate_batchnorm(theirs.to(device), clips.to(device))
    theirs.to(home)
    path = os.path.join(directory, "pytorchvideo_random.pyth")
    atomic_save({"model_state": theirs.state_dict()}, path)
    return path


def load_same_weights(ours: nn.Module, theirs: nn.Module, path: str) -> None:
    """The PyTorchVideo checkpoint at ``path`` into both models (ours via the importer, strict)."""
    state = safe_torch_load(path)
    theirs.load_state_dict(state.get("model_state", state) if isinstance(state, dict) else state)
    import_weights(ours, path, fmt="pytorchvideo", strict=True)


def top1_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches."""
    return float((reference.argmax(-1) == other.argmax(-1)).float().mean()) if len(reference) else math.nan


@dataclass
class Row:
    """One measurement: clips/s of each side (median over repeats) and their ratio."""

    name: str
    batch: int
    ours_clips_per_s: float
    pytorchvideo_clips_per_s: float
    ratio: float
    ours_ms: float
    pytorchvideo_ms: float
    repeats: int


@dataclass
class OnnxRuntimeRow:
    """Inference at one batch: clips/s of ours and of ONNX Runtime (medians) and their ratio."""

    name: str
    batch: int
    ours_clips_per_s: float
    onnxruntime_clips_per_s: float
    ratio: float
    ours_ms: float
    onnxruntime_ms: float
    repeats: int


def _medians(batch: int, ours: List[float], other: List[float]) -> tuple:
    """clips/s of each side, ratio ours / other, ms of each side, repeats."""
    a, b = statistics.median(ours), statistics.median(other)
    return (round(batch / a, 3), round(batch / b, 3), round(b / a, 3), round(a * 1e3, 1), round(b * 1e3, 1),
            len(ours))


def _row(name: str, batch: int, times: Dict[str, List[float]]) -> Row:
    return Row(name, batch, *_medians(batch, times["ours"], times["pytorchvideo"]))


@dataclass
class BenchmarkResult:
    """Everything one run of the model benchmark measured."""

    config: str
    mode: str
    resolved_mode: str
    device: str
    threads: int
    crop: int
    frames: int
    max_abs_diff: float
    top1_agreement: float
    first_call_s: float
    rows: List[Row] = field(default_factory=list)
    # ONNX Runtime: version, provider, threads, opset, max_abs_diff (vs ours), export_max_abs_diff
    # (vs our plain fp32 model, per batch size); or {"skipped": why}.
    onnxruntime: dict = field(default_factory=dict)
    onnxruntime_rows: List[OnnxRuntimeRow] = field(default_factory=list)

    def headline(self) -> Row:
        """The inference row at the largest batch."""
        inference = [r for r in self.rows if r.name == "inference"]
        return max(inference, key=lambda r: r.batch)

    def to_json(self) -> dict:
        head = self.headline()
        out = {
            "ours_clips_per_s": head.ours_clips_per_s,
            "pytorchvideo_clips_per_s": head.pytorchvideo_clips_per_s,
            "ratio": head.ratio,
            "max_abs_diff": self.max_abs_diff,
            "batch": head.batch,
        }
        out.update({k: v for k, v in asdict(self).items()
                    if k not in ("rows", "max_abs_diff", "onnxruntime", "onnxruntime_rows")})
        out["rows"] = [asdict(r) for r in self.rows]
        out["onnxruntime"] = {**self.onnxruntime, "rows": [asdict(r) for r in self.onnxruntime_rows]}
        return out

    def format(self) -> str:
        lines = [
            f"config {self.config}  mode {self.mode} ({self.resolved_mode})  device {self.device}  "
            f"threads {self.threads}  clip {self.frames}x{self.crop}x{self.crop}",
            f"max |logit difference| vs PyTorchVideo: {self.max_abs_diff:.3g}  "
            f"top-1 agreement: {100 * self.top1_agreement:.1f}%  first call (prepare / compile): {self.first_call_s:.1f} s",
            f"{'measurement':<12} {'batch':>5} {'ours clips/s':>13} {'PTV clips/s':>12} {'ours/PTV':>9} "
            f"{'ours ms':>9} {'PTV ms':>9} {'repeats':>7}",
        ]
        for r in self.rows:
            lines.append(f"{r.name:<12} {r.batch:>5} {r.ours_clips_per_s:>13.2f} {r.pytorchvideo_clips_per_s:>12.2f} "
                         f"{r.ratio:>8.2f}x {r.ours_ms:>9.1f} {r.pytorchvideo_ms:>9.1f} {r.repeats:>7}")
        lines.extend(self._onnxruntime_lines())
        return "\n".join(lines)

    def _onnxruntime_lines(self) -> List[str]:
        ort = self.onnxruntime
        if "skipped" in ort:
            return [f"onnxruntime: skipped ({ort['skipped']})"]
        lines = [
            f"ONNX Runtime {ort['version']} ({ort['provider']}, threads {ort['threads']}, our fp32 model exported at "
            f"opset {ort['opset']}): max |logit difference| vs ours: {ort['max_abs_diff']:.3g}",
            f"{'measurement':<12} {'batch':>5} {'ours clips/s':>13} {'ORT clips/s':>12} {'ours/ORT':>9} "
            f"{'ours ms':>9} {'ORT ms':>9} {'repeats':>7}",
        ]
        for r in self.onnxruntime_rows:
            lines.append(f"{r.name:<12} {r.batch:>5} {r.ours_clips_per_s:>13.2f} {r.onnxruntime_clips_per_s:>12.2f} "
                         f"{r.ratio:>8.2f}x {r.ours_ms:>9.1f} {r.onnxruntime_ms:>9.1f} {r.repeats:>7}")
        return lines


def onnxruntime_runner(model: nn.Module, cfg, *, crop: int, frames: int,
                       device: torch.device) -> tuple[Optional[Callable[[torch.Tensor], torch.Tensor]], dict]:
    """ONNX Runtime running ``model`` (plain, fp32, eval, on the CPU): exported to a temporary file by
    :func:`video_gc.export.export_model` with a dynamic batch, which checks the file's logits against
    PyTorch's before it is kept. Returns (runner, facts), or (None, {"skipped": why}) where it cannot run."""
    if device.type != "cpu":
        return None, {"skipped": f"it runs on the CPU only; this run's device is {device.type} (--device cpu for it)"}
    try:
        import onnx  # noqa: F401 (export_model checks the file with it)
        import onnxruntime
    except ImportError as err:
        return None, {"skipped": f"{err.name} is not installed; it is pinned in requirements.txt"}
    from video_gc.export import DEFAULT_OPSET, onnx_runner, export_model

    export_cfg = cfg.clone()
    export_cfg.defrost()
    export_cfg.DATA.NUM_FRAMES, export_cfg.DATA.TEST_CROP_SIZE = frames, crop
    export_cfg.DATA.PATH_TO_DATA_DIR = ""  # no class names in the throw-away sidecar
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(model, export_cfg, os.path.join(tmp, "model.onnx"), "onnx", opset=DEFAULT_OPSET)
        run = onnx_runner(exported.path)  # the session holds the graph; the file can go
    facts = {"version": onnxruntime.__version__, "provider": "CPUExecutionProvider",
             "threads": torch.get_num_threads(), "opset": DEFAULT_OPSET,
             "export_max_abs_diff": {str(b): d for b, d in exported.max_abs_diff.items()}}
    return run, facts


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, clips: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(clips), labels).backward()
    optimizer.step()


def benchmark_model(
    cfg,
    *,
    config_name: str = "",
    mode: str = "fp32",
    batch_sizes: Sequence[int] = (1, 8),
    train_batch: Optional[int] = 8,
    crop: int = 112,
    frames: Optional[int] = None,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    weights: Optional[str] = None,
    seed: int = 0,
) -> BenchmarkResult:
    """Time ours (prepared for ``mode``) against PyTorchVideo's default fp32 eval model.

    Inference runs under ``torch.inference_mode`` for both. The training step
    (forward, backward, SGD) uses both models as built, fp32, in train mode.
    """
    device_ = torch.device(device)
    if device_.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    frames = frames or cfg.DATA.NUM_FRAMES
    settings = resolve_mode(mode, device_)
    ours = build_model(cfg)
    if cfg.RESNET.NUM_GROUPS != 1:
        raise ValueError("RESNET.NUM_GROUPS must be 1: PyTorchVideo's slow_r50 / c2d_r50 have no grouped convs")
    theirs = build_pytorchvideo_model(cfg.MODEL.ARCH, depth=cfg.RESNET.DEPTH, num_frames=frames, crop=crop,
                                      num_classes=cfg.MODEL.NUM_CLASSES, width=cfg.RESNET.WIDTH_PER_GROUP)
    with tempfile.TemporaryDirectory() as tmp:
        path = weights or shared_weights_file(theirs, tmp, crop=crop, frames=frames, device=device_)
        load_same_weights(ours, theirs, path)
    ours.eval().to(device_)
    theirs.eval().to(device_)
    fast = prepare_for_inference(ours, mode, device_)
    ort_run, ort_facts = onnxruntime_runner(ours, cfg, crop=crop, frames=frames, device=device_)

    generator = torch.Generator().manual_seed(seed)
    clips = {b: torch.randn(b, 3, frames, crop, crop, generator=generator).to(device_) for b in batch_sizes}
    check = clips[max(batch_sizes)]
    start = time.perf_counter()
    with torch.inference_mode():
        ours_logits = fast(check)  # the first call also compiles in mode "compile"
        sync(device_)
        first_call_s = time.perf_counter() - start
        their_logits = theirs(check)
        if ort_run is not None:
            ort_facts["max_abs_diff"] = float((ort_run(check) - ours_logits.float()).abs().max())
    max_abs_diff = float((ours_logits - their_logits).abs().max())
    agreement = top1_agreement(their_logits, ours_logits)

    result = BenchmarkResult(config=config_name, mode=mode, resolved_mode=settings.mode, device=str(device_),
                             threads=torch.get_num_threads(), crop=crop, frames=frames,
                             max_abs_diff=max_abs_diff, top1_agreement=agreement,
                             first_call_s=round(first_call_s, 2), onnxruntime=ort_facts)
    for b in batch_sizes:
        x = clips[b]
        sides = {"ours": lambda: fast(x), "pytorchvideo": lambda: theirs(x)}
        if ort_run is not None:
            sides["onnxruntime"] = lambda: ort_run(x)
        with torch.inference_mode():
            times = interleaved_timings(sides, repeats=repeats, warmup=warmup, device=device_)
        result.rows.append(_row("inference", b, times))
        if ort_run is not None:
            result.onnxruntime_rows.append(OnnxRuntimeRow("onnxruntime", b, *_medians(b, times["ours"],
                                                                                     times["onnxruntime"])))

    if train_batch:
        x = torch.randn(train_batch, 3, frames, crop, crop, generator=generator).to(device_)
        labels = torch.randint(0, cfg.MODEL.NUM_CLASSES, (train_batch,), generator=generator).to(device_)
        steps = {}
        for name, model in (("ours", ours), ("pytorchvideo", theirs)):
            model = copy.deepcopy(model).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            steps[name] = (lambda m, o: lambda: _train_step(m, o, x, labels))(model, optimizer)
        result.rows.append(_row("train step", train_batch, interleaved_timings(
            steps, repeats=repeats, warmup=warmup, device=device_)))
    return result


def precision_agreement(cfg, model: nn.Module, *, mode: str = "bf16", reference: str = "fp32",
                        device: str = "cpu", max_batches: Optional[int] = None) -> dict:
    """Top-1 agreement of ``mode`` with ``reference`` on the test split of cfg's dataset.

    Every view of every test video goes through both prepared models (views of a
    video batched into one forward pass); the result counts per-view and per-video
    (softmax summed over views, as the test loop does) arg-max agreement.
    """
    from video_gc.data import construct_loader
    from video_gc.engine.meters import ensemble_views

    device_ = torch.device(device)
    fast, ref = prepare_for_inference(model, mode, device_), prepare_for_inference(model, reference, device_)
    views = videos = view_hits = video_hits = 0
    max_diff = 0.0
    with torch.inference_mode():
        for i, batch in enumerate(construct_loader(cfg, "test")):
            if max_batches is not None and i >= max_batches:
                break
            inputs = batch["inputs"]
            if inputs.numel() == 0:
                continue
            b, v = inputs.shape[:2]
            clips = inputs.flatten(0, 1)
            a, r = fast(clips), ref(clips)
            max_diff = max(max_diff, float((a - r).abs().max()))
            view_hits += int((a.argmax(1) == r.argmax(1)).sum())
            pa = ensemble_views(torch.softmax(a, -1).view(b, v, -1), cfg.DATA.ENSEMBLE_METHOD)
            pr = ensemble_views(torch.softmax(r, -1).view(b, v, -1), cfg.DATA.ENSEMBLE_METHOD)
            video_hits += int((pa.argmax(1) == pr.argmax(1)).sum())
            views += b * v
            videos += b
    if not views:
        raise ValueError(f"no test clips decoded from {cfg.DATA.PATH_TO_DATA_DIR}/test.csv")
    return {"mode": resolve_mode(mode, device_).mode, "reference": reference, "videos": videos, "views": views,
            "view_top1_agreement": view_hits / views, "video_top1_agreement": video_hits / videos,
            "max_abs_diff": max_diff}


def dataset_agreement(cfg, data_dir: str, *, mode: str = "bf16", crop: int = 112, frames: Optional[int] = None,
                      device: str = "cpu", weights: Optional[str] = None) -> dict:
    """:func:`precision_agreement` of cfg's model on the test split of ``data_dir`` at
    ``crop``, with ``weights`` (a checkpoint the test loop reads, loaded strictly) or
    else calibrated random weights (as the benchmark's)."""
    from video_gc.engine.common import load_test_weights

    cfg = cfg.clone()
    cfg.DATA.PATH_TO_DATA_DIR = data_dir
    cfg.DATA.TEST_CROP_SIZE = crop
    cfg.DATA.NUM_FRAMES = frames or cfg.DATA.NUM_FRAMES
    model = build_model(cfg)
    if weights:
        load_test_weights(cfg, model, weights)
    else:
        calibrate_batchnorm(model, torch.randn(2, 3, cfg.DATA.NUM_FRAMES, crop, crop,
                                               generator=torch.Generator().manual_seed(1)))
    return precision_agreement(cfg, model, mode=mode, device=device)
