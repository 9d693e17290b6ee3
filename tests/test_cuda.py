"""The CUDA path: training steps in fp32 / bf16 / fp16 AMP (GradScaler overflow skip
included), channels_last_3d, every inference mode against the fp32 reference, CPU vs
CUDA logits, an NCCL process group with SyncBatchNorm, the loader's pinned memory,
the demo config end to end, torch.compile and every context block in each precision.

Every test here is marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is
False. On a machine with a GPU: ``python -m pytest -m cuda -q`` (tools/check_gpu.py
runs it and then measures the GPU; docs/gpu.md).
"""

import copy
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_gc.config import load_config
from video_gc.models import build_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW = os.path.join(REPO, "configs/kinetics/SLOW_8x8_R50.yaml")
C2D = os.path.join(REPO, "configs/kinetics/C2D_8x8_R50.yaml")
DEMO = os.path.join(REPO, "configs/demo/SLOW_GC_DEMO.yaml")
# A narrow R50 (8 base channels) on 4-frame clips, no dropout (its masks differ between runs).
NARROW = ["RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "10", "DATA.NUM_FRAMES", "4", "MODEL.DROPOUT_RATE", "0.0"]
ALL = "[[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 1, 2]]"
ODD = "[[], [1, 3], [1, 3, 5], []]"
GC = ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ODD)
VARIANTS = {
    "slow": (SLOW, ()),
    "c2d": (C2D, ()),
    "nl": (SLOW, ("NONLOCAL.LOCATION", "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]", "NONLOCAL.INSTANTIATION", "softmax")),
    "gc": (SLOW, ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ALL)),
    "gc_after_add": (SLOW, ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ODD, "CONTEXT.POSITION", "afterAdd")),
    "snl": (SLOW, ("CONTEXT.TYPE", "snl", "CONTEXT.LOCATION", ODD)),
    "se": (SLOW, ("CONTEXT.TYPE", "se", "CONTEXT.LOCATION", ALL)),
    "cgd": (SLOW, ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL)),
    "cgd_conv2": (SLOW, ("CONTEXT.TYPE", "cgd", "CONTEXT.LOCATION", ALL, "CONTEXT.POSITION", "after_conv2")),
    "na": (SLOW, ("CONTEXT.TYPE", "na", "CONTEXT.LOCATION", ALL)),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cuda():
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture
def strict_fp32():
    """TF32 off for the test (PyTorch lets cuDNN convs use it by default): fp32 comparisons stay fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cfg(config=SLOW, opts=()):
    return load_config(config, NARROW + list(opts))


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random, so that no path hides behind a zero init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p + 0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


def _model(config=SLOW, opts=()):
    torch.manual_seed(0)
    return _randomise(build_model(_cfg(config, opts)))


def _clips(n=2, size=32, seed=1, frames=4):
    return torch.randn(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _labels(n, classes=10, seed=2):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def _flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().float().flatten() for p in model.parameters() if p.grad is not None])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _scaled_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| over max(1, max |ref|)."""
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).abs().max()) / max(1.0, float(ref.abs().max()))


# ---------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------
def _amp_cfg(precision: str):
    on = precision != "fp32"
    return _cfg(SLOW, GC + ("TRAIN.MIXED_PRECISION", str(on), "TRAIN.MIXED_PRECISION_DTYPE",
                            precision if on else "bf16", "SOLVER.BASE_LR", "0.05", "SOLVER.WEIGHT_DECAY", "0.0"))


def _gradients(model, x, y, dtype, scaler):
    """The unscaled fp32 gradients of one cross-entropy step (autocast to ``dtype``); the logits."""
    from video_gc.models.layout import autocast_context

    model.zero_grad(set_to_none=True)
    with autocast_context(x.device, dtype):
        logits = model(x)
    scaler.scale(F.cross_entropy(logits.float(), y)).backward()
    if scaler.is_enabled():
        for p in model.parameters():  # what scaler.unscale_ does, without an optimizer
            if p.grad is not None:
                p.grad.div_(scaler.get_scale())
    return logits


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_step_in_each_precision(precision, strict_fp32):
    from video_gc.engine.optimizer import construct_optimizer
    from video_gc.engine.train import amp_dtype, make_grad_scaler, optimizer_step
    from video_gc.models.layout import autocast_context

    device = cuda()
    cfg = _amp_cfg(precision)
    dtype = amp_dtype(cfg, device)
    assert dtype == DTYPES[precision]
    scaler = make_grad_scaler(device, dtype)
    assert scaler.is_enabled() == (precision == "fp16")  # only fp16 needs loss scaling
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    reference = copy.deepcopy(model)
    x, y = _clips(8, seed=3).to(device), _labels(8).to(device)

    # Same weights, same batch: the mixed-precision gradient points where the fp32 one does. (A scale
    # of 2**10, not the engine's 2**16: a first step that overflows is skipped by design, below.)
    ref_logits = _gradients(reference, x, y, None, torch.amp.GradScaler("cuda", enabled=False))
    logits = _gradients(model, x, y, dtype, torch.amp.GradScaler("cuda", init_scale=2.0**10,
                                                                  enabled=scaler.is_enabled()))
    assert logits.dtype == (dtype or torch.float32)  # autocast really ran the network in dtype
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in model.parameters())
    assert _scaled_error(logits.float(), ref_logits) < {"fp32": 1e-4, "bf16": 0.1, "fp16": 0.02}[precision]
    cosine = _cosine(_flat_grads(model), _flat_grads(reference))
    assert cosine > {"fp32": 0.99999, "bf16": 0.98, "fp16": 0.995}[precision], cosine

    # The engine's step (scale, step, update) learns a fixed batch (an fp16 step may be skipped).
    optimizer = construct_optimizer(model, cfg)
    losses = []
    for _ in range(10):
        with autocast_context(device, dtype):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer_step(loss, model=model, optimizer=optimizer, scaler=scaler, cfg=cfg)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("overflow", ["inf_loss", "fp16_range"])
def test_fp16_step_with_overflowing_gradients_is_skipped(overflow):
    from video_gc.engine.train import make_grad_scaler, optimizer_step
    from video_gc.models.layout import autocast_context

    device = cuda()
    torch.manual_seed(0)
    model = build_model(_cfg(SLOW, GC)).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = make_grad_scaler(device, torch.float16)
    assert scaler.is_enabled()
    start_scale = scaler.get_scale()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = _clips(4, seed=5).to(device), _labels(4).to(device)

    def step(factor: float) -> None:
        with autocast_context(device, torch.float16):
            logits = model(x)
        optimizer_step(F.cross_entropy(logits.float(), y) * factor, model=model, optimizer=optimizer, scaler=scaler)

    # inf_loss: the loss itself is inf. fp16_range: a finite fp32 loss (1e30 times the real one) whose
    # scaled gradient overflows the float16 logits' gradient.
    step(float("inf") if overflow == "inf_loss" else 1e30)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and not all(torch.isfinite(g).all() for g in grads)  # the overflow did happen
    assert scaler.get_scale() == start_scale * 0.5  # backed off by backoff_factor
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} changed in a skipped step"
    assert not optimizer.state  # SGD never ran: no momentum buffers

    # A normal step goes through at the lowered scale (should it overflow on its own, the scale halves
    # again and the next try goes through).
    for tries in range(1, 6):
        step(1.0)
        if any(not torch.equal(p, before[name]) for name, p in model.named_parameters()):
            break
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert scaler.get_scale() == start_scale * 0.5 ** tries
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_3d_training_and_inference(strict_fp32):
    from video_gc.inference import prepare_for_inference
    from video_gc.models.layout import to_channels_last_3d

    device = cuda()
    model = _model(SLOW, GC).train()
    contiguous = copy.deepcopy(model).to(device)
    last = to_channels_last_3d(copy.deepcopy(model).to(device))
    layouts = {}
    hooks = [m.register_forward_hook(
        lambda m, i, o, name=name: layouts.update({name: o.is_contiguous(memory_format=torch.channels_last_3d)}))
        for name, m in last.named_modules() if isinstance(m, nn.Conv3d)]
    x, y = _clips(4, seed=6).to(device), _labels(4).to(device)
    out_c = contiguous(x)
    out_l = last(x.contiguous(memory_format=torch.channels_last_3d))
    for h in hooks:
        h.remove()
    # cuDNN keeps every conv output in channels_last_3d: no layout conversion inside the network.
    assert layouts and not [name for name, kept in layouts.items() if not kept]
    assert _scaled_error(out_l, out_c) < 1e-4
    F.cross_entropy(out_c, y).backward()
    F.cross_entropy(out_l, y).backward()
    assert _cosine(_flat_grads(last), _flat_grads(contiguous)) > 0.99999
    for (name, a), b in zip(last.named_parameters(), contiguous.parameters()):
        assert _scaled_error(a.grad, b.grad) < 1e-3, name

    model.eval()
    x = _clips(4, seed=7)
    with torch.inference_mode():
        ref = prepare_for_inference(model, "reference", device)(x)
        out = prepare_for_inference(model, "channels_last", device)(x)
    assert _scaled_error(out, ref) < 1e-3


# ---------------------------------------------------------------------------
# Inference modes
# ---------------------------------------------------------------------------
def _top1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_inference_mode_against_the_fp32_reference(variant, strict_fp32):
    from video_gc.inference import prepare_for_inference, resolve_mode

    device = cuda()
    config, opts = VARIANTS[variant]
    model = _model(config, opts)
    x = _clips(32, seed=11)  # a fixed set of clips
    with torch.inference_mode():
        ref = prepare_for_inference(model, "reference", device)(x)
        assert ref.device.type == "cuda" and ref.dtype == torch.float32
        for mode in ("fused", "channels_last", "fp32"):
            out = prepare_for_inference(model, mode, device)(x)
            assert out.dtype == torch.float32
            assert _scaled_error(out, ref) < 1e-3, mode
        for mode, agreement in (("bf16", 0.85), ("fp16", 0.95), ("best", 0.95)):
            fast = prepare_for_inference(model, mode, device)
            out = fast(x)
            assert out.dtype == torch.float32 and torch.isfinite(out).all(), mode
            assert _top1(out, ref) >= agreement, (mode, _top1(out, ref))
            assert _scaled_error(out, ref) < (0.05 if mode == "bf16" else 0.01), mode
    assert resolve_mode("best", device).mode == "fp16" and resolve_mode("fp32", device).fuse
    assert not resolve_mode("fp32", device).channels_last  # cuDNN's fp32 convs: contiguous


@pytest.mark.parametrize("mode", ["reference", "fused"])
def test_cpu_and_cuda_logits_for_the_same_weights(mode, strict_fp32):
    from video_gc.inference import prepare_for_inference

    model = _model(SLOW, ("CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", ODD, "NONLOCAL.LOCATION",
                          "[[[]], [[1]], [[1]], [[]]]", "NONLOCAL.INSTANTIATION", "softmax"))
    x = _clips(8, seed=12)
    with torch.inference_mode():
        on_cpu = prepare_for_inference(model, mode, "cpu")(x)
        on_gpu = prepare_for_inference(model, mode, cuda())(x)
    assert on_cpu.device.type == "cpu" and on_gpu.device.type == "cuda"
    # oneDNN (channels_last_3d) and cuDNN sum in different orders: float32 rounding apart.
    assert _scaled_error(on_gpu.cpu(), on_cpu) < 5e-4
    assert torch.equal(on_gpu.argmax(1).cpu(), on_cpu.argmax(1))


def test_compile_mode_matches_the_reference(strict_fp32):
    from video_gc.inference import prepare_for_inference

    device = cuda()
    model = _model(SLOW, GC)
    fast = prepare_for_inference(model, "compile", device)
    with torch.inference_mode():
        for n in (4, 2):  # a second batch size recompiles (or runs the dynamic graph)
            x = _clips(n, seed=13 + n)
            ref = prepare_for_inference(model, "reference", device)(x)
            out = fast(x)
            assert out.dtype == torch.float32 and out.device.type == "cuda"
            assert _scaled_error(out, ref) < 1e-3


# ---------------------------------------------------------------------------
# Process group, SyncBatchNorm
# ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("store", ["file", "tcp"])
def test_nccl_process_group_with_sync_batchnorm(store, tmp_path, strict_fp32):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from video_gc.engine import distributed as du

    assert dist.is_available() and dist.is_nccl_available()
    cfg = _cfg(SLOW, GC + ("NUM_GPUS", "1", "BN.NORM_TYPE", "sync_batchnorm"))
    info = du.init_process_group(cfg, rank=0, world_size=1, local_rank=0, init_method="")
    assert info.device == torch.device("cuda", 0) and du.backend_for(cfg) == "nccl"
    assert not dist.is_initialized()  # one process: the engine starts no group
    init = f"file://{tmp_path / 'store'}" if store == "file" else f"tcp://127.0.0.1:{_free_port()}"
    dist.init_process_group("nccl", init_method=init, rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl" and du.get_world_size() == 1
        torch.manual_seed(0)
        synced = build_model(cfg)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        assert not any(type(m) is nn.BatchNorm3d for m in synced.modules())
        plain = build_model(_cfg(SLOW, GC))
        plain.load_state_dict(synced.state_dict())
        synced, plain = synced.to(info.device).train(), plain.to(info.device).train()
        ddp = DistributedDataParallel(synced, device_ids=[0])
        opt_a = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        opt_b = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
        x, y = _clips(4, seed=8).to(info.device), _labels(4).to(info.device)
        for _ in range(2):
            out_a, out_b = ddp(x), plain(x)
            assert _scaled_error(out_a, out_b) < 1e-4
            for model, opt, out in ((ddp, opt_a, out_a), (plain, opt_b, out_b)):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(out, y).backward()
                opt.step()
        state_a, state_b = synced.state_dict(), plain.state_dict()
        assert state_a.keys() == state_b.keys()
        for key in state_a:  # parameters and BN running statistics
            if state_a[key].is_floating_point():
                assert _scaled_error(state_a[key], state_b[key]) < 1e-4, key
        # The engine's collectives over NCCL, CPU tallies included.
        assert du.all_reduce_sum(torch.tensor([3.0, 4.0])).tolist() == [3.0, 4.0]
        assert du.all_reduce_mean(torch.tensor([2.0], device=info.device)).item() == 2.0
        assert du.broadcast_object({"epoch": 3}) == {"epoch": 3}
        assert du.all_gather_objects(du.parameters_digest(synced)) == [du.parameters_digest(synced)]
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# Data and the demo config
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo's synthetic videos (80x64, 48 frames), 8 classes x 4: 16 train / 8 val / 8 test."""
    from video_gc.prep.synthetic import DEMO_VIDEO_FRAMES, DEMO_VIDEO_SIZE, make_synthetic_dataset

    folder = str(tmp_path_factory.mktemp("demo_data"))
    make_synthetic_dataset(folder, num_classes=8, videos_per_class=4, num_frames=DEMO_VIDEO_FRAMES, size=DEMO_VIDEO_SIZE,
                           val_fraction=0.25, test_fraction=0.25, workers=2, verbose=False)
    return folder


def test_loader_pins_memory_and_copies_without_blocking(demo_data, tmp_path):
    from video_gc.data import construct_loader, shuffle_loader

    device = cuda()
    opts = ["DATA.PATH_TO_DATA_DIR", demo_data, "OUTPUT_DIR", str(tmp_path), "TRAIN.BATCH_SIZE", "4",
            "TEST.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "2"]
    cfg = load_config(DEMO, opts + ["DATA_LOADER.PIN_MEMORY", "True"])
    for split in ("train", "test"):
        loader = construct_loader(cfg, split)
        assert loader.pin_memory
        shuffle_loader(loader, 0)
        seen = 0
        for batch in loader:
            inputs, labels = batch["inputs"], batch["labels"]
            assert inputs.is_pinned() and labels.is_pinned()
            on_gpu = inputs.to(device, non_blocking=True)
            labels_gpu = labels.to(device, non_blocking=True)
            torch.cuda.current_stream(device).synchronize()
            assert torch.equal(on_gpu.cpu(), inputs) and torch.equal(labels_gpu.cpu(), labels)
            seen += len(labels)
        views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
        assert seen == (16 if split == "train" else 8)
        if split == "test":
            assert inputs.shape[1] == views  # [B, V, 3, T, S, S]
    unpinned = construct_loader(load_config(DEMO, opts + ["DATA_LOADER.PIN_MEMORY", "False"]), "train")
    assert not unpinned.pin_memory and not next(iter(unpinned))["inputs"].is_pinned()


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_demo_config_one_epoch_then_30_view_test(amp, demo_data, tmp_path):
    from video_gc.engine import checkpoint as cu
    from video_gc.engine.launch import main as run_net

    out = tmp_path / "run"
    opts = ["DATA.PATH_TO_DATA_DIR", demo_data, "OUTPUT_DIR", str(out), "NUM_GPUS", "1", "SOLVER.MAX_EPOCH", "1",
            "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "4", "DATA_LOADER.NUM_WORKERS", "2",
            "DATA_LOADER.PIN_MEMORY", "True", "LOG_PERIOD", "1", "TEST.INFERENCE_MODE", "best"]
    if amp == "fp16":
        opts += ["TRAIN.MIXED_PRECISION", "True", "TRAIN.MIXED_PRECISION_DTYPE", "fp16"]
    assert run_net(["--cfg", DEMO, "--opts", *opts]) == 0
    log = (out / "log.txt").read_text()
    assert "1 process(es) on cuda" in log
    with open(out / "stats.jsonl") as f:
        stats = [json.loads(line) for line in f]
    iters = [r for r in stats if r["type"] == "train_iter"]
    assert len(iters) == 2 and all(np.isfinite(r["loss"]) and r["peak_mem_mb"] > 0 for r in iters)
    assert [r["epoch"] for r in stats if r["type"] == "val_epoch"] == [1]
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_views"] == 30 and metrics["videos_evaluated"] == 8 and metrics["videos_failed"] == 0
    assert metrics["inference_mode"] == "fp16"  # best on CUDA
    scores = np.load(out / "predictions.npz")["scores"]
    assert scores.shape == (8, 8)
    np.testing.assert_allclose(scores.sum(1), 30.0, rtol=1e-4)  # 30 softmax vectors per video
    state = cu.read_checkpoint(str(out / "checkpoints" / "checkpoint_epoch_00001.pyth"))
    if amp == "fp16":
        assert state["scaler_state"] is not None and state["scaler_state"]["scale"] > 0
    else:
        assert state["scaler_state"] is None


# ---------------------------------------------------------------------------
# Context blocks
# ---------------------------------------------------------------------------
def _blocks(dim=16, frames=4):
    from video_gc.models.blocks import CompactGlobalDescriptor, GlobalContextBlock, NonLocalBlock
    from video_gc.models.blocks import NormalizationAttention

    blocks = {f"nl_{i}": lambda i=i: NonLocalBlock(dim, instantiation=i)
              for i in ("gaussian", "embedded_gaussian", "dot_product", "concatenation")}
    blocks.update({f"gcnet_{p}": lambda p=p: GlobalContextBlock.preset(p, dim)
                   for p in ("gc", "snl", "se", "avg_add", "att_mul")})
    blocks.update({f"cgd_v{i}": lambda i=i: CompactGlobalDescriptor(dim, frames, variant=f"v{i}") for i in (1, 4, 7, 10)})
    blocks["cgd_unshared"] = lambda: CompactGlobalDescriptor(dim, frames, share_temporal=False)
    blocks.update({f"na_{form}": lambda form=form: NormalizationAttention(dim, std_form=form)
                   for form in ("official", "paper")})
    return blocks


BLOCK_NAMES = sorted(_blocks())
# Forward error (relative to the output's scale) and gradient cosine against float64 on the CPU.
BLOCK_TOLERANCE = {"fp32": (1e-4, 0.99999), "bf16": (3e-2, 0.99), "fp16": (5e-3, 0.998)}


def block_forward_backward(name: str, precision: str, device) -> dict:
    """One block, random weights (zero inits made non-zero), eval mode: its output and the gradients of
    its input and parameters on ``device`` under ``precision``'s autocast, and the same in float64 on the
    CPU; then a train-mode pass on ``device``. Returns the errors."""
    torch.manual_seed(0)
    block = _randomise(_blocks()[name]())
    x = torch.randn(2, 16, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))

    ref_block = copy.deepcopy(block).double()
    ref_x = x.double().requires_grad_()
    ref_out = ref_block(ref_x)
    (ref_out * weight.double()).sum().backward()

    dev_block = copy.deepcopy(block).to(device)
    dev_x = x.to(device).requires_grad_()
    dtype = DTYPES[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = dev_block(dev_x)
    assert out.shape == x.shape and out.device.type == device.type
    (out.float() * weight.to(device)).sum().backward()
    grads = {"input": (dev_x.grad, ref_x.grad)}
    for (pname, p), q in zip(dev_block.named_parameters(), ref_block.parameters()):
        if q.grad is not None and float(q.grad.abs().max()) > 1e-8:  # not the shift-invariant biases
            grads[pname] = (p.grad, q.grad)
    result = {"forward": _scaled_error(out.float().cpu(), ref_out),
              "cosines": {k: _cosine(a.cpu(), b) for k, (a, b) in grads.items()},
              "finite": bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(a).all()) for a, _ in grads.values())}

    dev_block.train()  # training mode (batch statistics) runs and gives finite gradients too
    dev_block.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = dev_block(x.to(device))
    (out.float() * weight.to(device)).sum().backward()
    result["train_finite"] = bool(torch.isfinite(out).all()) and all(
        bool(torch.isfinite(p.grad).all()) for p in dev_block.parameters() if p.grad is not None)
    return result


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_context_block_forward_backward(name, precision, strict_fp32):
    result = block_forward_backward(name, precision, cuda())
    forward_tol, min_cosine = BLOCK_TOLERANCE[precision]
    assert result["finite"] and result["train_finite"]
    assert result["forward"] < forward_tol, result["forward"]
    low = {k: c for k, c in result["cosines"].items() if c < min_cosine}
    assert not low, low
