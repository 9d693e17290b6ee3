"""The training loop: SGD with a per-iteration LR schedule, AMP, clipping,
precise BN, periodic validation, checkpoints and auto-resume.

Per epoch: train -> (precise BN) -> (validation on the deterministic centre
view) -> checkpoint. The checkpoint comes last, so the RNG state it stores is
exactly the one the next epoch starts from, and a resumed run continues as an
uninterrupted one would. Within the epoch, ``checkpoint_latest.pyth`` is written
on a wall-clock or iteration period and when a stop signal arrives; resumed, it
continues at the next iteration with the same batches and random draws.

The ranks agree on every such decision through the all-reduce each step already
makes for the loss, so they stop, save and go on together.
"""

from __future__ import annotations

import math
import os
import random
import warnings

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from video_gc.config import get_key

from . import checkpoint as cu
from . import distributed as du
from .common import EngineError, flatten_config, prepare_model
from video_gc.utils.io import CheckpointError
from video_gc.data.transforms import normalize_batch
from video_gc.models.layout import autocast_context
from .logger import StatsWriter, get_logger, peak_memory_mb, progress, read_stats, save_run_config
from .freeze import set_frozen_modes
from .losses import TrainObjective
from .lr_policy import get_lr_at_epoch, set_lr
from .meters import Timer, TrainMeter, topk_correct
from .optimizer import construct_optimizer
from .plots import plot_training_curves
from .signals import Preempted, agree_to_stop, graceful_stops, stop_requested

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


def optimizer_step(loss: torch.Tensor, *, model: nn.Module, optimizer, scaler, cfg=None) -> None:
    """A training step after the forward pass: the backward pass of ``loss`` (scaled for fp16),
    gradient clipping as ``cfg``'s SOLVER.CLIP_GRAD_* say (none without ``cfg``), the step (which
    the scaler skips when fp16 gradients overflowed), the scaler's update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg is not None and (cfg.SOLVER.CLIP_GRAD_VAL is not None or cfg.SOLVER.CLIP_GRAD_L2NORM is not None):
        scaler.unscale_(optimizer)
        _clip_gradients(cfg, model)
    scaler.step(optimizer)
    scaler.update()


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
def batch_inputs(cfg, batch: dict, device: torch.device) -> torch.Tensor:
    """The batch's clips on ``device`` as normalised floats; uint8 clips (DATA.NORMALIZE_ON_DEVICE)
    cross over as they are, a quarter of the bytes, and are normalised there."""
    inputs = batch["inputs"].to(device, non_blocking=True)
    return normalize_batch(inputs, cfg.DATA.MEAN, cfg.DATA.STD) if inputs.dtype == torch.uint8 else inputs


class RollingCheckpoint:
    """When to write checkpoint_latest.pyth: every PERIOD_MINUTES of wall-clock time (timed on
    rank 0, whose vote every rank follows) and every PERIOD_ITERS iterations."""

    def __init__(self, cfg):
        self.seconds = 60.0 * float(cfg.TRAIN.CHECKPOINT_PERIOD_MINUTES)
        self.iters = int(cfg.TRAIN.CHECKPOINT_PERIOD_ITERS)
        self.timer = Timer()

    def vote(self, done: int) -> float:
        """1.0 when this rank wants a checkpoint after ``done`` iterations of the run, else 0.0."""
        by_time = self.seconds > 0 and du.is_master() and self.timer.seconds() >= self.seconds
        return float(by_time or (self.iters > 0 and done % self.iters == 0))

    def reset(self) -> None:
        self.timer.reset()


def _save_progress(cfg, *, model, optimizer, scaler, progress: cu.Progress) -> str:
    """checkpoint_latest.pyth at ``progress``, written by rank 0 while the others wait."""
    path = du.run_on_master(lambda: cu.save_checkpoint(cfg.OUTPUT_DIR, progress.epoch, model, optimizer, scaler,
                                                       cfg, progress=progress), (CheckpointError,))
    logger.info("saved %s (epoch %d, iteration %d)", path, progress.epoch + 1, progress.iteration)
    return path


def train_epoch(cfg, *, loader, model, optimizer, scaler, epoch: int, device, dtype, stats: StatsWriter,
                dist_info: du.DistInfo, start: cu.Progress | None = None,
                rolling: RollingCheckpoint | None = None) -> dict:
    """Train for one epoch, from ``start.iteration`` when a run resumes part-way through it;
    returns the epoch summary (also written to stats.jsonl).

    A stop signal on any rank ends the epoch after the step under way, with
    checkpoint_latest.pyth written: Preempted.
    """
    model.train()
    set_frozen_modes(cu.unwrap(model), cfg)  # frozen stages and BN layers stay in eval mode
    objective = TrainObjective.from_cfg(cfg)
    iters = loader.sampler.batches_per_epoch
    if iters == 0:
        raise EngineError("the training loader is empty: TRAIN.BATCH_SIZE is larger than the train split")
    start = start or cu.Progress(epoch=epoch)
    meter = TrainMeter()
    if start.meter:
        meter.load_state_dict(start.meter)
    data_timer = Timer()
    batches = progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                       enabled=dist_info.is_master)
    lr = get_lr_at_epoch(cfg, epoch + max(start.iteration - 1, 0) / iters)  # the last step's, if any

    def save_progress(done: int) -> None:
        _save_progress(cfg, model=model, optimizer=optimizer, scaler=scaler, progress=cu.Progress(
            epoch=epoch, iteration=done, meter=meter.state_dict(), skipped=start.skipped + loader.skipped_this_epoch,
            best_top1=start.best_top1, best_epoch=start.best_epoch, global_batch=cfg.TRAIN.BATCH_SIZE))
        if rolling:
            rolling.reset()

    for it, batch in enumerate(batches, start=start.iteration):
        data_time = data_timer.seconds()
        compute_timer = Timer()
        lr = get_lr_at_epoch(cfg, epoch + it / iters)
        set_lr(optimizer, lr)
        inputs = batch_inputs(cfg, batch, device)
        labels = batch["labels"].to(device, non_blocking=True)
        inputs, targets = objective.prepare(inputs, labels)  # soft targets, mixup / cutmix

        with autocast_context(device, dtype):
            logits = model(inputs)
        loss = objective.loss(logits.float(), targets)
        hits1, hits5 = topk_correct(logits.detach().float(), objective.accuracy_labels(targets))
        # One all-reduce for loss, accuracy and the votes to stop or to save: NaN or a stop signal
        # on any rank reaches every rank, so all stop (or save) together.
        votes = [float(stop_requested() is not None), rolling.vote(epoch * iters + it + 1) if rolling else 0.0]
        reduced = du.all_reduce_mean(torch.stack([loss.detach(), hits1.float().mean(), hits5.float().mean(),
                                                  *torch.tensor(votes, device=loss.device)]))
        loss_value, top1, top5, stop_vote, save_vote = reduced.tolist()
        if not math.isfinite(loss_value):
            saved = cu.run_checkpoints(cfg.OUTPUT_DIR)
            kept = f"the last good checkpoint, {saved[0]}, is kept" if saved else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"loss is {loss_value} at epoch {epoch + 1}, iteration {it + 1}/{iters} (lr {lr:.6g}); "
                f"training stopped, {kept}. Lower SOLVER.BASE_LR, add warm-up or enable SOLVER.CLIP_GRAD_L2NORM.")

        optimizer_step(loss, model=model, optimizer=optimizer, scaler=scaler, cfg=cfg)
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
        if stop_vote > 0 or save_vote > 0:
            save_progress(it + 1)
            if stop_vote > 0:
                raise Preempted(agree_to_stop())
        data_timer.reset()
    # A signal after the last step's vote: stop before the epoch's end (precise BN, validation).
    if du.all_reduce_mean(torch.tensor([float(stop_requested() is not None)])).item() > 0:
        save_progress(iters)
        raise Preempted(agree_to_stop())

    summary = {"epoch": epoch + 1, "lr": lr, **meter.epoch_summary(dist_info.world_size),
               "peak_mem_mb": peak_memory_mb(device),
               "skipped_videos": len(set(start.skipped + loader.skipped_this_epoch))}
    stats.write("train_epoch", summary, step=(epoch + 1) * iters)
    logger.info("epoch %d/%d done: loss %.4f  top1 %.2f%%  top5 %.2f%%  %.1f clips/s  peak mem %.0f MB",
                epoch + 1, cfg.SOLVER.MAX_EPOCH, summary["loss"], summary["top1"], summary["top5"],
                summary["clips_per_s"], summary["peak_mem_mb"])
    if verdict := loader_verdict(cfg, summary):
        logger.warning("epoch %d/%d: %s", epoch + 1, cfg.SOLVER.MAX_EPOCH, verdict)
    return summary


def loader_verdict(cfg, summary: dict) -> str | None:
    """What to do when the model waited for data more than 10% of the epoch's step time, else None."""
    step = summary["data_time"] + summary["compute_time"]
    if not step > 0 or summary["data_time"] <= 0.1 * step:
        return None
    advice = []
    workers = cfg.DATA_LOADER.NUM_WORKERS
    per_process = max((os.cpu_count() or 1) // max(du.get_world_size(), 1), 1)
    if workers < per_process:
        advice.append(f"more DATA_LOADER.NUM_WORKERS (now {workers}; this machine has {per_process} cores per process)")
    if cfg.DATA.FORMAT == "video":
        if cfg.DATA.DECODING_BACKEND == "decord":
            advice.append("DATA.DECODING_BACKEND pyav (it skips the frames a clip does not need: 1.6-2.2x less CPU)")
        advice.append("videos re-encoded by data_prep/resize_videos.py (its --gop and --bframes defaults)")
        advice.append("the JPEG frame store (data_prep/make_frame_store.py, DATA.FORMAT frames)")
    return (f"the data loader is the bottleneck: the model waited for data {100 * summary['data_time'] / step:.0f}% "
            f"of the step time. Try " + "; ".join(advice or ["faster storage or fewer augmentation steps"]))


@torch.inference_mode()
def evaluate(cfg, *, loader, model, device, dtype, epoch: int, stats: StatsWriter, step: int) -> dict:
    """Loss and top-1/top-5 on the val split (one centre view per video), summed over ranks;
    recorded at ``step`` (the training iterations done).

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
    stats.write("val_epoch", result, step=step)
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
    inputs = (batch_inputs(cfg, batch, device) for batch in loader)
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
    earlier = cu.run_checkpoints(cfg.OUTPUT_DIR)
    if source in map(os.path.abspath, earlier):
        raise EngineError(
            f"TRAIN.CHECKPOINT_FILE_PATH {cfg.TRAIN.CHECKPOINT_FILE_PATH} lies in this run's own "
            f"{cu.checkpoint_dir(cfg.OUTPUT_DIR)}, where a fresh run writes its checkpoints: copy it elsewhere "
            f"first, or resume that run (TRAIN.AUTO_RESUME True)")
    if not earlier:
        return
    names = sorted(os.path.basename(path) for path in earlier)
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


def _log_resume(cfg, path: str, start: cu.Progress, how: str) -> None:
    if start.epoch >= cfg.SOLVER.MAX_EPOCH:
        logger.info("training already complete (epoch %d of %d, %s); %s", start.epoch, cfg.SOLVER.MAX_EPOCH, path,
                    "testing" if cfg.TEST.ENABLE else "nothing to do")
    elif start.iteration:
        logger.info("%s %s: continuing at epoch %d/%d, iteration %d", how, path, start.epoch + 1,
                    cfg.SOLVER.MAX_EPOCH, start.iteration + 1)
    else:
        logger.info("%s %s: continuing at epoch %d/%d", how, path, start.epoch + 1, cfg.SOLVER.MAX_EPOCH)


# What a run learns from. A resume whose config changes one of these says so (and goes on with the
# new value); SOLVER's optimizer keys are checked harder by check_optimizer_state.
RECIPE_KEYS = ("SOLVER.", "MIXUP.", "AUG.", "BN.", "MODEL.LOSS_FUNC", "MODEL.DROPOUT_RATE", "TRAIN.BATCH_SIZE",
               "TRAIN.FREEZE_UP_TO", "DATA.NUM_FRAMES", "DATA.SAMPLING_RATE", "DATA.TARGET_FPS", "DATA.TRAIN_",
               "DATA.MEAN", "DATA.STD", "DATA.RANDOM_FLIP", "DATA.INV_UNIFORM_SAMPLE", "DATA.DECODING_SHORT_SIZE")


def recipe_changes(cfg, state: dict) -> list[str]:
    """``KEY old -> new`` for each RECIPE_KEYS setting of ``cfg`` that differs from the config the
    checkpoint ``state`` stores (none when it stores no readable config)."""
    text = state.get("cfg")
    try:
        stored = yaml.safe_load(text) if isinstance(text, str) else {}
    except yaml.YAMLError:
        return []

    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    changes = []
    for key, old in flatten_config(stored if isinstance(stored, dict) else {}):
        if not key.startswith(RECIPE_KEYS):
            continue
        try:
            new = get_key(cfg, key)
        except (KeyError, TypeError):  # a key this version no longer has, or no longer nests
            continue
        if plain(new) != plain(old):
            changes.append(f"{key} {old!r} -> {plain(new)!r}")
    return changes


def _warn_recipe_changes(cfg, state: dict, path: str) -> None:
    """Log (rank 0) the RECIPE_KEYS changes since the checkpoint's run; never stops a resume."""
    try:
        changes = recipe_changes(cfg, state) if du.is_master() else []
    except Exception as err:  # noqa: BLE001 - a stored config this check cannot read is not an error
        logger.info("could not compare the training settings with %s's (%s)", path, err)
        changes = []
    if changes:
        logger.warning("resuming %s with other training settings than its run's: %s. Training goes on with the "
                       "new ones", path, "; ".join(changes))


def _resume_from_file(cfg, model, optimizer, scaler) -> cu.Progress | None:
    """TRAIN.CHECKPOINT_FILE_PATH as PySlowFast reads it: a video_gc checkpoint of this very model
    (same names and shapes, head included) carries on from its epoch with its optimizer, unless
    TRAIN.CHECKPOINT_EPOCH_RESET; anything else is None: a fine-tuning start from its weights."""
    from .common import video_gc_training_state

    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    if cfg.TRAIN.CHECKPOINT_TYPE not in ("pytorch", "video_gc", "auto") or cfg.TRAIN.CHECKPOINT_EPOCH_RESET:
        return None
    state = video_gc_training_state(path)
    if state is None or state.get("optimizer_state") is None:
        return None
    expected = {k: tuple(v.shape) for k, v in cu.unwrap(model).state_dict().items()}
    if {k: tuple(v.shape) for k, v in state["model_state"].items()} != expected:
        return None  # another head or another model: its weights start a fine-tuning run
    start = cu.restore_training_state(state, path, model, optimizer, scaler)
    _warn_recipe_changes(cfg, state, path)
    start.best_top1 = start.best_epoch = None  # checkpoint_best.pyth names a checkpoint of this folder only
    _log_resume(cfg, path, start, "TRAIN.CHECKPOINT_FILE_PATH is a checkpoint of this model; its epoch and "
                                  "optimizer resume (TRAIN.CHECKPOINT_EPOCH_RESET True would take its weights only) from")
    return start


def resume_or_initialise(cfg, model, optimizer, scaler) -> cu.Progress:
    """Auto-resume from the checkpoint that resumes furthest along (epoch or latest), else
    TRAIN.CHECKPOINT_FILE_PATH (its training state when it is a checkpoint of this model,
    else its weights), else scratch.

    Returns where training continues. Rank 0 picks the file; all ranks load it.
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
        _warn_recipe_changes(cfg, state, path)
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        _log_resume(cfg, path, start, f"resumed (torchrun restart {restarts}) from" if restarts else "resumed from")
        return start
    du.run_on_master(lambda: _clear_earlier_checkpoints(cfg), (EngineError,))
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        start = _resume_from_file(cfg, model, optimizer, scaler)
        if start is not None:
            return start
        from video_gc.models.weights import load_pretrained

        load_pretrained(cu.unwrap(model), cfg)  # logs its own load report
        logger.info("fresh run from epoch 1: initial weights from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    else:
        logger.info("training from scratch (no checkpoint in %s, TRAIN.CHECKPOINT_FILE_PATH empty)",
                    cu.checkpoint_dir(cfg.OUTPUT_DIR))
    return cu.Progress()


def _end_epoch(cfg, *, epoch: int, start: cu.Progress, result: dict, model, optimizer, scaler, loaders, device,
               dtype, stats: StatsWriter) -> cu.Progress:
    """Precise BN, validation, the epoch checkpoint (then housekeeping: best, keep-last, latest
    superseded) and a stop signal's checkpoint; returns where the next epoch starts."""
    from video_gc.data import shuffle_loader

    train_loader, val_loader = loaders
    last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
    do_ckpt = (epoch + 1) % max(cfg.TRAIN.CHECKPOINT_PERIOD, 1) == 0 or last
    do_eval = val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or last)
    if cfg.BN.USE_PRECISE_STATS and (do_ckpt or do_eval):
        shuffle_loader(train_loader, epoch)
        precise_bn(cfg, loader=train_loader, model=model, device=device)
    after = cu.Progress(epoch=epoch + 1, best_top1=start.best_top1, best_epoch=start.best_epoch)
    improved = False
    if do_eval:
        result["val"] = evaluate(cfg, loader=val_loader, model=model, device=device, dtype=dtype, epoch=epoch,
                                 stats=stats, step=(epoch + 1) * train_loader.sampler.batches_per_epoch)
        # Only epochs with a checkpoint compete for checkpoint_best.pyth.
        improved = do_ckpt and (after.best_top1 is None or result["val"]["top1"] > after.best_top1)
        if improved:
            after.best_top1, after.best_epoch = result["val"]["top1"], epoch + 1
    if do_ckpt:
        # Rank 0's weights are the ones saved; its verdict reaches every rank.
        du.run_on_master(lambda: _check_finite_parameters(model, epoch), (NonFiniteLossError,))
        result["last_checkpoint"] = du.run_on_master(
            lambda: _save_epoch(cfg, epoch, model=model, optimizer=optimizer, scaler=scaler, progress=after,
                                best=improved), (CheckpointError,))
    if du.all_reduce_mean(torch.tensor([float(stop_requested() is not None)])).item() > 0:
        if not do_ckpt:  # off the CHECKPOINT_PERIOD, but the epoch is whole: keep it
            result["last_checkpoint"] = du.run_on_master(
                lambda: _save_epoch(cfg, epoch, model=model, optimizer=optimizer, scaler=scaler, progress=after,
                                    best=False), (CheckpointError,))
        raise Preempted(agree_to_stop())
    return after


def _save_epoch(cfg, epoch: int, *, model, optimizer, scaler, progress: cu.Progress, best: bool) -> str:
    """Rank 0: the epoch checkpoint, then checkpoint_best.pyth, keep-last-N and a superseded latest."""
    path = cu.save_checkpoint(cfg.OUTPUT_DIR, epoch, model, optimizer, scaler, cfg, progress=progress)
    logger.info("saved %s", path)
    if best and cfg.TRAIN.CHECKPOINT_KEEP_BEST:
        logger.info("best validation top-1 so far (%.2f%%, epoch %d): %s", progress.best_top1, epoch + 1,
                    cu.mark_best(path))
    removed = cu.prune_checkpoints(cfg.OUTPUT_DIR, keep_last=cfg.TRAIN.CHECKPOINT_KEEP_LAST, superseded_latest=True)
    if removed:
        logger.info("removed %s", ", ".join(removed))
    return path


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
    from video_gc.data.loader import normalizes_on_device

    seed_everything(cfg.RNG_SEED)
    device = dist_info.device
    model = prepare_model(cfg, dist_info)
    optimizer = construct_optimizer(model, cfg)
    dtype = amp_dtype(cfg, device)
    scaler = make_grad_scaler(device, dtype)
    start = resume_or_initialise(cfg, model, optimizer, scaler)
    if start.iteration and start.global_batch not in (None, cfg.TRAIN.BATCH_SIZE):
        raise EngineError(f"the checkpoint stopped part-way through epoch {start.epoch + 1} with TRAIN.BATCH_SIZE "
                          f"{start.global_batch}, and its iteration {start.iteration} means other videos with "
                          f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE}: resume with TRAIN.BATCH_SIZE {start.global_batch}")
    if dist_info.is_master:  # only now: a run refused above leaves the earlier run's config.yaml alone
        save_run_config(cfg)
    model = wrap_ddp(model, dist_info)

    train_loader = construct_loader(cfg, "train", uint8_clips=normalizes_on_device(cfg, device))
    val_loader = construct_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    tb_dir = (cfg.TENSORBOARD.LOG_DIR or os.path.join(cfg.OUTPUT_DIR, "tensorboard")) if cfg.TENSORBOARD.ENABLE else None
    # Every record's TensorBoard step is the training iterations done, so one step drops all that is
    # redone (on a fresh start: whatever an earlier run left, as rewind does for stats.jsonl).
    resumed = start.epoch * train_loader.sampler.batches_per_epoch + start.iteration
    stats = StatsWriter(cfg.OUTPUT_DIR, enabled=dist_info.is_master, tensorboard_dir=tb_dir, purge_step=resumed + 1)
    if dropped := stats.rewind(start.epoch, start.iteration):
        logger.info("stats.jsonl: dropped %d record(s) of work done after that checkpoint, which is redone now",
                    dropped)
    params = sum(p.numel() for p in cu.unwrap(model).parameters())
    logger.info("model %s/%s + %s: %s parameters; %d train batches per epoch; device %s x %d; AMP %s",
                cfg.MODEL.ARCH, cfg.RESNET.DEPTH, cfg.CONTEXT.TYPE, f"{params:,}",
                train_loader.sampler.batches_per_epoch, device.type, dist_info.world_size, dtype or "off")

    result = {"epochs": start.epoch, "last_checkpoint": None, "train": None, "val": None}
    rolling = RollingCheckpoint(cfg)
    try:
        with graceful_stops():
            for epoch in range(start.epoch, cfg.SOLVER.MAX_EPOCH):
                shuffle_loader(train_loader, epoch, start.iteration)
                result["train"] = train_epoch(cfg, loader=train_loader, model=model, optimizer=optimizer,
                                              scaler=scaler, epoch=epoch, device=device, dtype=dtype, stats=stats,
                                              dist_info=dist_info, start=start, rolling=rolling)
                start = _end_epoch(cfg, epoch=epoch, start=start, result=result, model=model, optimizer=optimizer,
                                   scaler=scaler, loaders=(train_loader, val_loader), device=device, dtype=dtype,
                                   stats=stats)
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
