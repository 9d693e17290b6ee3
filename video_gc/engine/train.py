"""The training loop: SGD with a per-iteration LR schedule, AMP, clipping,
precise BN, periodic validation, checkpoints and auto-resume.

Per epoch: train -> (precise BN) -> (validation on the deterministic centre
view) -> checkpoint. The checkpoint comes last, so the RNG state it stores is
exactly the one the next epoch starts from, and a resumed run continues as an
uninterrupted one would.
"""

from __future__ import annotations

import math
import os
import random
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as cu
from . import distributed as du
from .common import EngineError, prepare_model
from video_gc.utils.io import CheckpointError
from video_gc.models.layout import autocast_context
from .logger import StatsWriter, get_logger, peak_memory_mb, progress, read_stats, save_run_config
from .lr_policy import get_lr_at_epoch, set_lr
from .meters import Timer, TrainMeter, topk_correct
from .optimizer import construct_optimizer
from .plots import plot_training_curves

logger = get_logger()


class NonFiniteLossError(RuntimeError):
    """The loss (or, before a checkpoint, a parameter) became NaN or inf."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch the same way on every rank."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------
def amp_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None when TRAIN.MIXED_PRECISION is off.

    fp16 needs a grad scaler and CUDA; on CPU it falls back to bf16 with a warning.
    """
    if not cfg.TRAIN.MIXED_PRECISION:
        return None
    if cfg.TRAIN.MIXED_PRECISION_DTYPE == "fp16" and device.type == "cuda":
        return torch.float16
    if cfg.TRAIN.MIXED_PRECISION_DTYPE == "fp16":
        logger.warning("TRAIN.MIXED_PRECISION_DTYPE fp16 needs CUDA; using bf16 autocast on %s", device.type)
    return torch.bfloat16


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Enabled only for fp16 on CUDA (bf16 keeps fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def _clip_gradients(cfg, model: nn.Module) -> None:
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.SOLVER.CLIP_GRAD_VAL is not None:
        nn.utils.clip_grad_value_(params, cfg.SOLVER.CLIP_GRAD_VAL)
    if cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
        nn.utils.clip_grad_norm_(params, cfg.SOLVER.CLIP_GRAD_L2NORM)


def _check_finite_parameters(model: nn.Module, epoch: int) -> None:
    for name, param in cu.unwrap(model).state_dict().items():
        if param.is_floating_point() and not torch.isfinite(param).all():
            raise NonFiniteLossError(
                f"parameter or buffer '{name}' is NaN/inf after epoch {epoch + 1}; training stopped and "
                f"no checkpoint written for this epoch (the previous checkpoints are kept). "
                f"Lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRAD_L2NORM.")


# ---------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------
def train_epoch(cfg, *, loader, model, optimizer, scaler, epoch: int, device, dtype, stats: StatsWriter,
                dist_info: du.DistInfo) -> dict:
    """Train for one epoch; returns the epoch summary (also written to stats.jsonl)."""
    model.train()
    iters = len(loader)
    if iters == 0:
        raise EngineError("the training loader is empty: TRAIN.BATCH_SIZE is larger than the train split")
    meter = TrainMeter()
    data_timer = Timer()
    batches = progress(loader, total=iters, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                       enabled=dist_info.is_master)
    for it, batch in enumerate(batches):
        data_time = data_timer.seconds()
        compute_timer = Timer()
        lr = get_lr_at_epoch(cfg, epoch + it / iters)
        set_lr(optimizer, lr)
        inputs = batch["inputs"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)

        with autocast_context(device, dtype):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        hits1, hits5 = topk_correct(logits.detach().float(), labels)
        # One all-reduce for loss and accuracy; NaN on any rank reaches every rank, so all stop together.
        reduced = du.all_reduce_mean(torch.stack([loss.detach(), hits1.float().mean(), hits5.float().mean()]))
        loss_value, top1, top5 = reduced.tolist()
        if not math.isfinite(loss_value):
            saved = cu.list_checkpoints(cfg.OUTPUT_DIR)
            kept = f"the last good checkpoint, {saved[0]}, is kept" if saved else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"loss is {loss_value} at epoch {epoch + 1}, iteration {it + 1}/{iters} (lr {lr:.6g}); "
                f"training stopped, {kept}. Lower SOLVER.BASE_LR, add warm-up or enable SOLVER.CLIP_GRAD_L2NORM.")

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.SOLVER.CLIP_GRAD_VAL is not None or cfg.SOLVER.CLIP_GRAD_L2NORM is not None:
            scaler.unscale_(optimizer)
            _clip_gradients(cfg, model)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

        meter.update(loss=loss_value, top1=100.0 * top1, top5=100.0 * top5, batch=inputs.shape[0],
                     data_time=data_time, compute_time=compute_timer.seconds())
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == iters:
            window = meter.window_summary(dist_info.world_size)
            record = {"epoch": epoch + 1, "iter": it + 1, "iters": iters, "lr": lr, **window,
                      "peak_mem_mb": peak_memory_mb(device)}
            stats.write("train_iter", record, step=epoch * iters + it + 1)
            logger.info("epoch %d/%d iter %d/%d  loss %.4f  top1 %.1f%%  top5 %.1f%%  lr %.5g  "
                        "data %.2fs  compute %.2fs  %.1f clips/s", epoch + 1, cfg.SOLVER.MAX_EPOCH, it + 1, iters,
                        window["loss"], window["top1"], window["top5"], lr, window["data_time"],
                        window["compute_time"], window["clips_per_s"])
        data_timer.reset()

    summary = {"epoch": epoch + 1, "lr": lr, **meter.epoch_summary(dist_info.world_size),
               "peak_mem_mb": peak_memory_mb(device),
               "skipped_videos": len(set(getattr(loader, "skipped_this_epoch", ())))}
    stats.write("train_epoch", summary, step=epoch + 1)
    logger.info("epoch %d/%d done: loss %.4f  top1 %.2f%%  top5 %.2f%%  %.1f clips/s  peak mem %.0f MB",
                epoch + 1, cfg.SOLVER.MAX_EPOCH, summary["loss"], summary["top1"], summary["top5"],
                summary["clips_per_s"], summary["peak_mem_mb"])
    return summary


@torch.inference_mode()
def evaluate(cfg, *, loader, model, device, dtype, epoch: int, stats: StatsWriter) -> dict:
    """Loss and top-1/top-5 on the val split (one centre view per video), summed over ranks.

    Runs the bare model: shards may differ in length, and DDP's forward would wait for the others.
    """
    model = cu.unwrap(model)
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # loss sum, top1 hits, top5 hits, videos
    failed = 0
    for batch in loader:
        failed += len(batch.get("failed", ()))
        if batch["labels"].numel() == 0:
            continue
        inputs = batch["inputs"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with autocast_context(device, dtype):
            logits = model(inputs).float()
        hits1, hits5 = topk_correct(logits, labels)
        totals += torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                                hits1.sum().item(), hits5.sum().item(), labels.numel()], dtype=torch.float64)
    totals = du.all_reduce_sum(totals)
    failed = int(du.all_reduce_sum(torch.tensor([failed])).item())
    n = max(totals[3].item(), 1.0)
    result = {"epoch": epoch + 1, "loss": totals[0].item() / n, "top1": 100.0 * totals[1].item() / n,
              "top5": 100.0 * totals[2].item() / n, "videos": int(totals[3].item()), "failed": failed}
    stats.write("val_epoch", result, step=epoch + 1)
    logger.info("epoch %d val (centre view, %d videos, %d failed to decode): loss %.4f  top1 %.2f%%  top5 %.2f%%",
                epoch + 1, result["videos"], failed, result["loss"], result["top1"], result["top5"])
    return result


def precise_bn(cfg, *, loader, model: nn.Module, device) -> None:
    """Recompute BN running statistics with frozen weights (fvcore), on up to NUM_BATCHES_PRECISE batches."""
    with warnings.catch_warnings():  # fvcore's import scripts a function; torch deprecates torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

    model = cu.unwrap(model)
    model.train()
    if not get_bn_modules(model):
        return
    num = min(cfg.BN.NUM_BATCHES_PRECISE, len(loader))
    inputs = (batch["inputs"].to(device, non_blocking=True) for batch in loader)
    with torch.no_grad():
        update_bn_stats(model, inputs, num)
    logger.info("precise BN: statistics recomputed over %d batches", num)


# ---------------------------------------------------------------------------
# Set-up and the whole run
# ---------------------------------------------------------------------------
def wrap_ddp(model: nn.Module, dist_info: du.DistInfo) -> nn.Module:
    if not dist_info.distributed:
        return model
    device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, output_device=device_ids and device_ids[0])


def _clear_earlier_checkpoints(cfg) -> None:
    """A fresh run must not mix its checkpoints with those of an earlier run in the same folder
    (it would overwrite some and leave newer ones behind): stop, or delete them when
    TRAIN.OVERWRITE_CHECKPOINTS says so."""
    source = os.path.abspath(cfg.TRAIN.CHECKPOINT_FILE_PATH) if cfg.TRAIN.CHECKPOINT_FILE_PATH else None
    earlier = cu.list_checkpoints(cfg.OUTPUT_DIR)
    if source in map(os.path.abspath, earlier):
        raise EngineError(
            f"TRAIN.CHECKPOINT_FILE_PATH {cfg.TRAIN.CHECKPOINT_FILE_PATH} lies in this run's own "
            f"{cu.checkpoint_dir(cfg.OUTPUT_DIR)}, where a fresh run writes its checkpoints: copy it elsewhere "
            f"first, or resume that run (TRAIN.AUTO_RESUME True)")
    if not earlier:
        return
    names = [os.path.basename(path) for path in earlier[::-1]]
    listed = ", ".join(names) if len(names) <= 4 else f"{names[0]}, ..., {names[-1]}"
    folder = cu.checkpoint_dir(cfg.OUTPUT_DIR)
    if not cfg.TRAIN.OVERWRITE_CHECKPOINTS:
        why = "TRAIN.AUTO_RESUME is False" if not cfg.TRAIN.AUTO_RESUME else "none of them loads"
        raise EngineError(
            f"{folder} holds {len(names)} checkpoint(s) of an earlier run ({listed}) and this run would start "
            f"afresh ({why}). Resume that run (TRAIN.AUTO_RESUME True), choose another OUTPUT_DIR, or set "
            f"TRAIN.OVERWRITE_CHECKPOINTS True to delete them and start afresh.")
    for path in earlier:
        os.remove(path)
    logger.warning("TRAIN.OVERWRITE_CHECKPOINTS True: deleted %d checkpoint(s) of an earlier run from %s (%s)",
                   len(names), folder, listed)


def resume_or_initialise(cfg, model, optimizer, scaler) -> int:
    """Auto-resume from the newest valid checkpoint, else fine-tune weights, else scratch.

    Returns the 0-based epoch to start from. Rank 0 picks the file; all ranks load it.
    A fresh start into a folder with another run's checkpoints stops (EngineError) unless
    TRAIN.OVERWRITE_CHECKPOINTS deletes them.
    """
    found = None
    if cfg.TRAIN.AUTO_RESUME:
        found = cu.find_last_valid_checkpoint(cfg.OUTPUT_DIR) if du.is_master() else None
        path = du.broadcast_object(found[0] if found else None)
        if path is not None and found is None:
            found = (path, cu.read_checkpoint(path))
    if found:
        path, state = found
        start = cu.restore_training_state(state, path, model, optimizer, scaler)
        if start >= cfg.SOLVER.MAX_EPOCH:
            logger.info("training already complete (epoch %d of %d, %s); %s", start, cfg.SOLVER.MAX_EPOCH, path,
                        "testing" if cfg.TEST.ENABLE else "nothing to do")
        else:
            logger.info("resumed from %s: continuing at epoch %d/%d", path, start + 1, cfg.SOLVER.MAX_EPOCH)
        return start
    du.run_on_master(lambda: _clear_earlier_checkpoints(cfg), (EngineError,))
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        from video_gc.models.weights import load_pretrained

        load_pretrained(cu.unwrap(model), cfg)  # logs its own load report
        logger.info("fresh run: initial weights from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    else:
        logger.info("training from scratch (no checkpoint in %s, TRAIN.CHECKPOINT_FILE_PATH empty)",
                    cu.checkpoint_dir(cfg.OUTPUT_DIR))
    return 0


def _check_ranks_agree(model: nn.Module, dist_info: du.DistInfo) -> None:
    """DDP keeps every rank's parameters identical; say so in the log, or shout if not."""
    digests = du.all_gather_objects(du.parameters_digest(cu.unwrap(model)))
    if len(set(digests)) == 1:
        logger.info("DDP check: parameters identical on all %d ranks (sha256 %s)", dist_info.world_size, digests[0][:16])
    else:
        logger.error("DDP check: parameters differ between ranks: %s", [d[:16] for d in digests])


def train(cfg, dist_info: du.DistInfo) -> dict:
    """Train per cfg; returns {"epochs": ..., "last_checkpoint": ..., "train": ..., "val": ...}.

    ``last_checkpoint`` (on every rank) is the last file this run wrote, None if it wrote none.
    """
    from video_gc.data import construct_loader, shuffle_loader

    seed_everything(cfg.RNG_SEED)
    device = dist_info.device
    model = prepare_model(cfg, dist_info)
    optimizer = construct_optimizer(model, cfg)
    dtype = amp_dtype(cfg, device)
    scaler = make_grad_scaler(device, dtype)
    start_epoch = resume_or_initialise(cfg, model, optimizer, scaler)
    if dist_info.is_master:  # only now: a run refused above leaves the earlier run's config.yaml alone
        save_run_config(cfg)
    model = wrap_ddp(model, dist_info)

    train_loader = construct_loader(cfg, "train")
    val_loader = construct_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    tb_dir = (cfg.TENSORBOARD.LOG_DIR or os.path.join(cfg.OUTPUT_DIR, "tensorboard")) if cfg.TENSORBOARD.ENABLE else None
    stats = StatsWriter(cfg.OUTPUT_DIR, enabled=dist_info.is_master, tensorboard_dir=tb_dir)
    params = sum(p.numel() for p in cu.unwrap(model).parameters())
    logger.info("model %s/%s + %s: %s parameters; %d train batches per epoch; device %s x %d; AMP %s",
                cfg.MODEL.ARCH, cfg.RESNET.DEPTH, cfg.CONTEXT.TYPE, f"{params:,}", len(train_loader), device.type,
                dist_info.world_size, dtype or "off")

    result = {"epochs": start_epoch, "last_checkpoint": None, "train": None, "val": None}
    try:
        for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
            shuffle_loader(train_loader, epoch)
            result["train"] = train_epoch(cfg, loader=train_loader, model=model, optimizer=optimizer, scaler=scaler,
                                          epoch=epoch, device=device, dtype=dtype, stats=stats, dist_info=dist_info)
            last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
            do_ckpt = (epoch + 1) % max(cfg.TRAIN.CHECKPOINT_PERIOD, 1) == 0 or last
            do_eval = val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or last)
            if cfg.BN.USE_PRECISE_STATS and (do_ckpt or do_eval):
                shuffle_loader(train_loader, epoch)
                precise_bn(cfg, loader=train_loader, model=model, device=device)
            if do_eval:
                result["val"] = evaluate(cfg, loader=val_loader, model=model, device=device, dtype=dtype,
                                         epoch=epoch, stats=stats)
            if do_ckpt:
                _check_finite_parameters(model, epoch)
                result["last_checkpoint"] = du.run_on_master(
                    lambda: cu.save_checkpoint(cfg.OUTPUT_DIR, epoch, model, optimizer, scaler, cfg),
                    (CheckpointError,))
                logger.info("saved %s", result["last_checkpoint"])
            result["epochs"] = epoch + 1
        if dist_info.distributed:
            _check_ranks_agree(model, dist_info)
    finally:
        stats.close()
        if dist_info.is_master:
            curve = plot_training_curves(read_stats(cfg.OUTPUT_DIR), os.path.join(cfg.OUTPUT_DIR, "training_curves.png"))
            if curve:
                logger.info("training curves: %s", curve)
    return result
