"""Engine building blocks: LR schedule, weight-decay groups, checkpoints, ensembling, metrics."""

import logging
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from video_gc.config import load_config
from video_gc.engine import checkpoint as cu
from video_gc.engine.logger import StatsWriter, read_stats
from video_gc.engine.lr_policy import get_lr_at_epoch
from video_gc.engine.meters import (confusion_matrix, ensemble_views, mean_class_accuracy, topk_accuracies,
                                    topk_correct)
from video_gc.engine.optimizer import construct_optimizer, param_groups
from video_gc.engine.test import compute_metrics
from video_gc.models.blocks.cgd import CompactGlobalDescriptor
from video_gc.utils.io import safe_torch_load


# ----------------------------------------------------------------------------- LR schedule
def test_cosine_with_warmup_values():
    cfg = load_config(None, ["SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", "0.1", "SOLVER.COSINE_END_LR", "0.0",
                             "SOLVER.MAX_EPOCH", "10", "SOLVER.WARMUP_EPOCHS", "2.0",
                             "SOLVER.WARMUP_START_LR", "0.01"])
    at_warmup_end = 0.05 * (1 + math.cos(math.pi * 2 / 10))  # the cosine's value at epoch 2
    assert get_lr_at_epoch(cfg, 0.0) == pytest.approx(0.01)
    # Iteration 5 of 10 in epoch 1 -> fractional epoch 1.5: 3/4 of the way through the warm-up.
    assert get_lr_at_epoch(cfg, 1 + 5 / 10) == pytest.approx(0.01 + 0.75 * (at_warmup_end - 0.01))
    assert get_lr_at_epoch(cfg, 2.0) == pytest.approx(at_warmup_end)
    assert get_lr_at_epoch(cfg, 5.0) == pytest.approx(0.05)
    assert get_lr_at_epoch(cfg, 7.25) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.725)))
    assert get_lr_at_epoch(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)


def test_cosine_end_lr_and_after_warmup():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.2", "SOLVER.COSINE_END_LR", "0.002", "SOLVER.MAX_EPOCH", "12",
                             "SOLVER.WARMUP_EPOCHS", "2.0", "SOLVER.COSINE_AFTER_WARMUP", "True"])
    assert get_lr_at_epoch(cfg, 2.0) == pytest.approx(0.2)  # cosine starts at the warm-up's end
    assert get_lr_at_epoch(cfg, 7.0) == pytest.approx(0.002 + 0.198 * 0.5)
    assert get_lr_at_epoch(cfg, 12.0) == pytest.approx(0.002)


def test_steps_with_relative_lrs_with_warmup_values():
    cfg = load_config(None, ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.BASE_LR", "0.1",
                             "SOLVER.STEPS", "[0, 4, 8]", "SOLVER.LRS", "[1, 0.1, 0.01]", "SOLVER.MAX_EPOCH", "10",
                             "SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.WARMUP_START_LR", "0.001"])
    assert get_lr_at_epoch(cfg, 0.0) == pytest.approx(0.001)
    assert get_lr_at_epoch(cfg, 0.5) == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))
    assert get_lr_at_epoch(cfg, 1.0) == pytest.approx(0.1)
    assert get_lr_at_epoch(cfg, 3.99) == pytest.approx(0.1)
    assert get_lr_at_epoch(cfg, 4.0) == pytest.approx(0.01)
    assert get_lr_at_epoch(cfg, 7.9) == pytest.approx(0.01)
    assert get_lr_at_epoch(cfg, 8.5) == pytest.approx(0.001)


# ----------------------------------------------------------------------------- weight decay groups
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 1, bias=True)
        self.bn = nn.BatchNorm3d(8)
        self.cgd = CompactGlobalDescriptor(8)
        self.ln = nn.LayerNorm([8, 1, 1, 1])
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 4)


def _group_of(groups, param):
    return [g["name"] for g in groups if any(p is param for p in g["params"])]


@pytest.mark.parametrize("zero_1d", [False, True])
def test_weight_decay_groups(zero_1d):
    cfg = load_config(None, ["SOLVER.WEIGHT_DECAY", "1e-4", "BN.WEIGHT_DECAY", "0.0",
                             "CONTEXT.CGD.WEIGHT_DECAY_MULT", "0.5", "SOLVER.ZERO_WD_1D_PARAM", str(zero_1d)])
    net = _Net()
    groups = param_groups(net, cfg)
    decay = {g["name"]: g["weight_decay"] for g in groups}
    for module in (net.bn, net.ln, net.gn):
        for p in module.parameters():
            assert _group_of(groups, p) == ["norm"]
    assert decay["norm"] == 0.0
    assert list(net.cgd.parameters())
    for p in net.cgd.parameters():  # CGD's vectors keep the halved decay even with ZERO_WD_1D_PARAM
        assert _group_of(groups, p) == ["cgd"]
    assert decay["cgd"] == pytest.approx(5e-5)
    assert _group_of(groups, net.conv.weight) == ["default"] and _group_of(groups, net.fc.weight) == ["default"]
    assert decay["default"] == pytest.approx(1e-4)
    expected_bias = "no_decay_1d" if zero_1d else "default"
    assert _group_of(groups, net.conv.bias) == [expected_bias] and _group_of(groups, net.fc.bias) == [expected_bias]
    if zero_1d:
        assert decay["no_decay_1d"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_sgd_settings_from_config():
    cfg = load_config(None, ["SOLVER.MOMENTUM", "0.8", "SOLVER.NESTEROV", "False", "SOLVER.DAMPENING", "0.1"])
    opt = construct_optimizer(_Net(), cfg)
    for group in opt.param_groups:
        assert (group["momentum"], group["nesterov"], group["dampening"]) == (0.8, False, 0.1)


# ----------------------------------------------------------------------------- checkpoints
def _tiny_model_and_optimizer():
    cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3", "CONTEXT.TYPE", "cgd",
                             "CONTEXT.LOCATION", "[[0], [], [], []]"])
    from video_gc.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = construct_optimizer(model, cfg)
    loss = model(torch.randn(2, 3, 2, 32, 32)).logsumexp(1).mean()
    loss.backward()
    opt.step()  # creates momentum buffers
    return cfg, model, opt


def test_checkpoint_round_trip_with_rng_and_optimizer(tmp_path):
    cfg, model, opt = _tiny_model_and_optimizer()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    path = cu.save_checkpoint(str(tmp_path), 4, model, opt, None, cfg)
    assert path.endswith("checkpoints/checkpoint_epoch_00005.pyth")
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])

    raw = safe_torch_load(path)  # weights_only=True must accept the whole file
    assert raw["epoch"] == 4
    assert "WIDTH_PER_GROUP: 2" in raw["cfg"]

    _, fresh_model, fresh_opt = _tiny_model_and_optimizer()
    for p in fresh_model.parameters():
        nn.init.normal_(p)
    # The fresh optimizer took the same step: scramble its state and settings so only a real restore matches.
    for state in fresh_opt.state.values():
        state["momentum_buffer"].normal_()
    for group in fresh_opt.param_groups:
        group["lr"] = 12.5
    # Other optimisation settings than the checkpoint's are refused before anything is loaded.
    fresh_opt.param_groups[0]["momentum"] = 0.123
    with pytest.raises(cu.CheckpointError, match="momentum 0.9, this run 0.123; resume with the SOLVER.MOMENTUM"):
        cu.restore_training_state(cu.read_checkpoint(path), path, fresh_model, fresh_opt)
    fresh_opt.param_groups[0]["momentum"] = 0.9
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    start = cu.restore_training_state(cu.read_checkpoint(path), path, fresh_model, fresh_opt)
    assert start.position == (5, 0)
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    for (name, a), b in zip(model.state_dict().items(), fresh_model.state_dict().values()):
        assert torch.equal(a, b), name
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    assert saved["state"].keys() == loaded["state"].keys() and saved["state"]
    for key in saved["state"]:
        assert saved["state"][key].keys() == loaded["state"][key].keys()
        for name, value in saved["state"][key].items():
            assert torch.equal(value, loaded["state"][key][name]), (key, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the saved state is restored onto this device")
def test_a_cuda_rng_state_on_a_machine_without_cuda_is_reported(caplog):
    state = cu.get_rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    expected = torch.rand(3)  # the CPU stream is still restored exactly
    with caplog.at_level(logging.WARNING, logger="video_gc"):
        cu.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)
    assert "holds a CUDA RNG state but no CUDA device is visible" in caplog.text


def test_corrupt_newest_checkpoint_is_skipped(tmp_path, caplog):
    cfg, model, opt = _tiny_model_and_optimizer()
    for epoch in range(3):
        cu.save_checkpoint(str(tmp_path), epoch, model, opt, None, cfg)
    newest = cu.checkpoint_path(str(tmp_path), 2)
    data = open(newest, "rb").read()
    with open(newest, "wb") as f:  # a partial write: half the bytes
        f.write(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        path, state = cu.find_last_valid_checkpoint(str(tmp_path))
    assert path == cu.checkpoint_path(str(tmp_path), 1) and state["epoch"] == 1
    assert "checkpoint_epoch_00003.pyth" in caplog.text and "skipping" in caplog.text


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    cfg, model, opt = _tiny_model_and_optimizer()
    path = cu.save_checkpoint(str(tmp_path), 0, model, opt, None, cfg)
    with pytest.raises(cu.CheckpointError, match="does not match the model"):
        cu.load_model_state(nn.Linear(2, 2), cu.read_checkpoint(path), path)


def test_checkpoint_for_another_class_count_names_file_and_key_and_copies_nothing(tmp_path):
    from video_gc.engine.common import load_test_weights
    from video_gc.models import build_model

    cfg, model, opt = _tiny_model_and_optimizer()
    path = cu.save_checkpoint(str(tmp_path), 0, model, opt, None, cfg)
    other_cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "5", "CONTEXT.TYPE", "cgd",
                                   "CONTEXT.LOCATION", "[[0], [], [], []]"])
    other = build_model(other_cfg)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(cu.CheckpointError) as err:
        cu.load_model_state(other, cu.read_checkpoint(path), path)
    assert path in str(err.value) and "head.projection.weight" in str(err.value)
    assert "(3, 64) vs model (5, 64)" in str(err.value)
    # The backbone matches; a partial load would have copied it before failing on the head.
    for name, value in other.state_dict().items():
        assert torch.equal(value, before[name]), name
    # TEST.ENABLE alone with such a checkpoint (the test-weights path) stops with the same kind of error.
    with pytest.raises(cu.CheckpointError, match="NUM_CLASSES"):
        load_test_weights(other_cfg, other, path)
    for name, value in other.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_mixed_precision_dtype_per_device_and_grad_scaler_in_checkpoint(tmp_path, caplog):
    from video_gc.engine.train import amp_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    off = load_config(None, [])
    fp16 = load_config(None, ["TRAIN.MIXED_PRECISION", "True", "TRAIN.MIXED_PRECISION_DTYPE", "fp16"])
    bf16 = load_config(None, ["TRAIN.MIXED_PRECISION", "True", "TRAIN.MIXED_PRECISION_DTYPE", "bf16"])
    assert amp_dtype(off, cpu) is None and amp_dtype(off, cuda) is None
    assert amp_dtype(fp16, cuda) == torch.float16 and amp_dtype(bf16, cuda) == torch.bfloat16
    with caplog.at_level(logging.WARNING, logger="video_gc"):
        assert amp_dtype(fp16, cpu) == torch.bfloat16  # fp16 autocast needs CUDA
    assert "fp16 needs CUDA" in caplog.text

    # An fp16 run's grad scaler (its scale and growth tracker) survives the checkpoint round trip.
    cfg, model, opt = _tiny_model_and_optimizer()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(torch.ones(()))  # the scale tensor is created lazily
    scaler.update(new_scale=256.0)
    path = cu.save_checkpoint(str(tmp_path), 0, model, opt, scaler, cfg)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    cu.restore_training_state(cu.read_checkpoint(path), path, model, opt, fresh)
    assert fresh.get_scale() == 256.0 and fresh.state_dict() == scaler.state_dict()


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_all_reduce_of_cpu_tallies_works_on_every_backend(tmp_path, backend):
    # Validation sums its counts in a CPU tensor; NCCL only reduces CUDA tensors.
    import torch.distributed as dist

    from video_gc.engine import distributed as du

    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        pytest.skip("NCCL needs a CUDA device")
    if backend == "nccl":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        totals = torch.tensor([3.5, 2.0, 7.0], dtype=torch.float64)
        summed = du.all_reduce_sum(totals)
        assert summed.device.type == "cpu" and summed.tolist() == [3.5, 2.0, 7.0]
        assert du.all_reduce_mean(torch.tensor([4.0, 6.0])).tolist() == [4.0, 6.0]
        assert du.all_reduce_sum(torch.tensor([5])).item() == 5
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- ensembling and metrics
def test_ensembling_sum_and_max_differ_as_computed_by_hand():
    # One video, three views, three classes: the sum favours class 1, the max favours class 0.
    views = torch.tensor([[[0.90, 0.05, 0.05], [0.10, 0.60, 0.30], [0.10, 0.60, 0.30]]])
    total = ensemble_views(views, "sum")
    peak = ensemble_views(views, "max")
    assert torch.allclose(total, torch.tensor([[1.10, 1.25, 0.65]]))
    assert torch.allclose(peak, torch.tensor([[0.90, 0.60, 0.30]]))
    assert total.argmax().item() == 1 and peak.argmax().item() == 0
    with pytest.raises(ValueError, match="ENSEMBLE_METHOD"):
        ensemble_views(views, "mean")


def test_topk_and_mean_class_accuracy():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    labels = torch.tensor([1, 1, 2, 2])
    hits1, hits2 = topk_correct(scores, labels, ks=(1, 2))
    assert hits1.tolist() == [True, False, True, False]
    assert hits2.tolist() == [True, True, True, False]
    assert topk_accuracies(scores, labels, ks=(1, 5)) == [50.0, 100.0]  # top-5 capped at 3 classes
    matrix = confusion_matrix(labels.numpy(), scores.argmax(1).numpy(), 3)
    assert matrix.tolist() == [[0, 0, 0], [1, 1, 0], [1, 0, 1]]
    # Imbalanced: class 0 has 1 video (right), class 1 has 3 (1 right) -> mean of 100% and 33.3%.
    skewed = confusion_matrix(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 0]), 2)
    assert mean_class_accuracy(skewed) == pytest.approx((100.0 + 100.0 / 3) / 2)


def test_compute_metrics_video_vs_clip_level():
    results = {
        "label": np.array([0, 1]),
        "scores": np.array([[2.0, 1.0], [1.2, 1.8]]),  # both videos right after ensembling
        "view_hits1": np.array([3, 1]),                 # but only 4 of 6 single views were right
        "view_hits5": np.array([3, 3]),
        "views": np.array([3, 3]),
    }
    metrics, matrix = compute_metrics(results, 2)
    assert metrics["top1"] == 100.0 and metrics["clip_top1"] == pytest.approx(400 / 6)
    assert metrics["mean_class_accuracy"] == 100.0 and matrix.trace() == 2


def test_checkpoint_file_path_resumes_a_checkpoint_of_this_model_unless_reset_and_auto_resume_wins(tmp_path):
    from video_gc.engine.train import make_grad_scaler, resume_or_initialise

    cfg, trained, opt = _tiny_model_and_optimizer()
    source = cu.save_checkpoint(str(tmp_path / "pretrain"), 7, trained, opt, None, cfg)
    scaler = make_grad_scaler(torch.device("cpu"), None)

    def fresh_run(name, *extra):
        run = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3", "CONTEXT.TYPE", "cgd",
                                 "CONTEXT.LOCATION", "[[0], [], [], []]", "OUTPUT_DIR", str(tmp_path / name),
                                 "TRAIN.CHECKPOINT_FILE_PATH", source, "TRAIN.CHECKPOINT_TYPE", "auto", *extra])
        _, model, _ = _tiny_model_and_optimizer()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return run, model, construct_optimizer(model, run)

    def same_weights(model):
        for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), name

    # A checkpoint of this very model: its epoch and optimizer resume, as in PySlowFast.
    run, model, fresh_opt = fresh_run("resume")
    assert resume_or_initialise(run, model, fresh_opt, scaler).position == (8, 0)
    same_weights(model)
    for key, buffers in opt.state_dict()["state"].items():
        torch.testing.assert_close(fresh_opt.state_dict()["state"][key], buffers, rtol=0, atol=0)
    # CHECKPOINT_EPOCH_RESET: weights only, epoch 0, optimizer untouched.
    run, model, fresh_opt = fresh_run("reset", "TRAIN.CHECKPOINT_EPOCH_RESET", "True")
    assert resume_or_initialise(run, model, fresh_opt, scaler).position == (0, 0)
    same_weights(model)
    assert not fresh_opt.state_dict()["state"]
    # A checkpoint of the run itself takes precedence over TRAIN.CHECKPOINT_FILE_PATH.
    cu.save_checkpoint(str(tmp_path / "reset"), 2, model, opt, None, run)
    assert resume_or_initialise(run, model, fresh_opt, scaler).position == (3, 0)
    assert fresh_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_loader_verdict_names_the_bottleneck_and_the_advice_that_applies():
    from video_gc.engine.train import loader_verdict

    cfg = load_config(None, ["DATA_LOADER.NUM_WORKERS", "0"])
    assert loader_verdict(cfg, {"data_time": 1.0, "compute_time": 9.0}) is None  # exactly 10%: fine
    verdict = loader_verdict(cfg, {"data_time": 3.0, "compute_time": 7.0})
    assert "waited for data 30% of the step time" in verdict
    assert "more DATA_LOADER.NUM_WORKERS (now 0" in verdict and "--gop" in verdict and "DATA.FORMAT frames" in verdict
    assert "DECODING_BACKEND" not in verdict  # already the default, pyav
    decord = load_config(None, ["DATA.DECODING_BACKEND", "decord"])
    assert "DATA.DECODING_BACKEND pyav" in loader_verdict(decord, {"data_time": 3.0, "compute_time": 7.0})
    frames = load_config(None, ["DATA.FORMAT", "frames", "DATA_LOADER.NUM_WORKERS", str(os.cpu_count())])
    verdict = loader_verdict(frames, {"data_time": 5.0, "compute_time": 5.0})
    assert "50%" in verdict and "NUM_WORKERS" not in verdict and "--gop" not in verdict


def test_recipe_changes_compares_values_not_types_and_never_raises():
    import yaml

    from video_gc.engine.train import recipe_changes

    cfg = load_config(None, [])
    same = {"cfg": cfg.dump()}
    assert recipe_changes(cfg, same) == []  # tuples dumped as lists, ints, floats: all equal
    stored = yaml.safe_load(cfg.dump())
    stored["SOLVER"]["MAX_EPOCH"] = 7
    stored["SOLVER"]["BASE_LR"] = {"NESTED": 1}  # a key this version does not nest: skipped
    stored["SOLVER"]["GONE_KEY"] = 3  # a key this version does not have: skipped
    stored["DATA"]["PATH_TO_DATA_DIR"] = "elsewhere"  # not the recipe
    assert recipe_changes(cfg, {"cfg": yaml.safe_dump(stored)}) == [f"SOLVER.MAX_EPOCH 7 -> {cfg.SOLVER.MAX_EPOCH}"]
    assert recipe_changes(cfg, {"cfg": b"not text"}) == [] and recipe_changes(cfg, {}) == []
    assert recipe_changes(cfg, {"cfg": "{unclosed"}) == []


def tensorboard_scalars(folder):
    """{tag: [(step, value)]} of the event files in ``folder``, as TensorBoard's (legacy) loader
    reads them: a resumed run's start marker drops the earlier events from its step on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_stats_writer_flushes_each_record_and_a_resume_replaces_the_redone_steps(tmp_path):
    tb = tmp_path / "tb"
    # a run that writes 6 steps and is SIGKILLed: what it wrote must be on disk
    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal
from video_gc.engine.logger import StatsWriter
stats = StatsWriter({str(tmp_path)!r}, tensorboard_dir={str(tb)!r}, purge_step=1)
for step in range(1, 7):
    stats.write("train_iter", {{"epoch": 1 + (step - 1) // 4, "iter": 1 + (step - 1) % 4, "loss": float(step)}},
                step=step)
os.kill(os.getpid(), signal.SIGKILL)
"""], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert tensorboard_scalars(tb)["train_iter/loss"] == [(s, float(s)) for s in range(1, 7)]
    # resumed at epoch 2, iteration 0 (after 4 steps): steps 5 and 6 are redone, with other values.
    # TensorBoard reads event files in name order, and a name starts with the second it was opened:
    # a resumed run's file is opened in a later second than the killed run's.
    time.sleep(1.1)
    again = StatsWriter(str(tmp_path), tensorboard_dir=str(tb), purge_step=5)
    assert again.rewind(1, 0) == 2
    for step in range(5, 9):
        again.write("train_iter", {"epoch": 2, "iter": step - 4, "loss": 10.0 * step}, step=step)
    again.close()
    expected = [(s, float(s)) for s in range(1, 5)] + [(s, 10.0 * s) for s in range(5, 9)]
    assert tensorboard_scalars(tb)["train_iter/loss"] == expected
    assert [(r["epoch"], r["iter"], r["loss"]) for r in read_stats(str(tmp_path))] == [
        (1 + (s - 1) // 4, 1 + (s - 1) % 4, loss) for s, loss in expected]
