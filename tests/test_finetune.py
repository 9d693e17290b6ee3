"""Fine-tuning aids: SGD / Adam / AdamW against hand computations, the optimizer-state check,
label smoothing, mixup / cutmix, stage and BN freezing, the head LR multiplier, and a real
fine-tuning run from a checkpoint with another class count."""

import math
import os

import pytest
import torch
from torch import nn

from test_engine_e2e import CFG, tiny_data, tiny_opts  # noqa: F401 (tiny_data is a fixture)
from video_gc.config import ConfigError, load_config
from video_gc.engine import checkpoint as cu
from video_gc.engine.freeze import STAGES, freeze_model, set_frozen_modes
from video_gc.engine.launch import main as run_net
from video_gc.engine.losses import TrainObjective, smooth_one_hot, soft_cross_entropy
from video_gc.engine.lr_policy import get_lr_at_epoch, set_lr
from video_gc.engine.mixup import Mixer, MixDraw, cutmix, mixup
from video_gc.engine.optimizer import check_optimizer_state, construct_optimizer
from video_gc.models import build_model
from video_gc.utils.io import CheckpointError, atomic_save, safe_torch_load


# ----------------------------------------------------------------------------- optimizers
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 1, bias=False)
        self.bn = nn.BatchNorm3d(3)
        self.head = nn.Linear(3, 2)


def _hand_steps(method, p0, grads, *, lr, wd, betas, momentum=0.9, eps=1e-8):
    """The update rules written out in float64: SGD with Nesterov momentum (weight decay added to
    the gradient), Adam (L2 added to the gradient), AdamW (decoupled decay, then Adam)."""
    p, buf, m, v = p0.double(), None, None, None
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        g = g.double()
        if method == "sgd":
            d = g + wd * p
            buf = d if buf is None else momentum * buf + d
            p = p - lr * (d + momentum * buf)
            continue
        if method == "adamw":
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
        v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    return p


@pytest.mark.parametrize("method", ["sgd", "adam", "adamw"])
def test_first_two_steps_equal_the_hand_computation(method):
    cfg = load_config(None, ["SOLVER.OPTIMIZING_METHOD", method, "SOLVER.WEIGHT_DECAY", "0.01",
                             "BN.WEIGHT_DECAY", "0.0", "SOLVER.BETAS", "[0.8, 0.9]", "SOLVER.MOMENTUM", "0.9",
                             "SOLVER.NESTEROV", "True", "SOLVER.HEAD_LR_MULT", "10"])
    torch.manual_seed(0)
    net = _Tiny()
    nn.init.normal_(net.bn.weight)
    nn.init.normal_(net.bn.bias)
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    opt = construct_optimizer(net, cfg)
    assert type(opt).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[method]
    gen = torch.Generator().manual_seed(1)
    grads = {name: [torch.randn(p.shape, generator=gen) for _ in range(2)] for name, p in net.named_parameters()}
    for step in range(2):
        set_lr(opt, 0.05)
        for name, p in net.named_parameters():
            p.grad = grads[name][step].clone()
        opt.step()
    decay = {"conv.weight": 0.01, "bn.weight": 0.0, "bn.bias": 0.0, "head.weight": 0.01, "head.bias": 0.01}
    for name, p in net.named_parameters():
        lr = 0.5 if name.startswith("head.") else 0.05
        expected = _hand_steps(method, start[name], grads[name], lr=lr, wd=decay[name], betas=(0.8, 0.9))
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_head_lr_mult_survives_the_schedule():
    cfg = load_config(None, ["SOLVER.HEAD_LR_MULT", "10", "SOLVER.ZERO_WD_1D_PARAM", "True",
                             "RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3"])
    model = build_model(cfg)
    opt = construct_optimizer(model, cfg)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["norm", "default", "head_no_decay_1d", "head_default"]  # the convs have no bias
    head = {id(p) for p in model.head.parameters()}
    for group in opt.param_groups:
        assert all((id(p) in head) == group["name"].startswith("head_") for p in group["params"])
    for epoch in (0.0, 7.3, 250.0):
        lr = get_lr_at_epoch(cfg, epoch)
        set_lr(opt, lr)
        for group in opt.param_groups:
            assert group["lr"] == (10 * lr if group["name"].startswith("head_") else lr)
    # With the default multiplier the head shares the other groups, as before.
    plain = construct_optimizer(build_model(load_config(None, ["RESNET.WIDTH_PER_GROUP", "2"])), load_config(None))
    assert [g["name"] for g in plain.param_groups] == ["norm", "default"]


def _saved_state(tmp_path, method, *extra):
    """A stepped optimizer's state, through a real file loaded with weights_only=True."""
    cfg = load_config(None, ["SOLVER.OPTIMIZING_METHOD", method, *extra])
    net = _Tiny()
    opt = construct_optimizer(net, cfg)
    net.head(net.bn(net.conv(torch.randn(2, 2, 1, 1, 1))).flatten(1)).sum().backward()
    opt.step()
    path = str(tmp_path / f"{method}.pyth")
    atomic_save({"optimizer_state": opt.state_dict()}, path)
    return safe_torch_load(path)["optimizer_state"], path


def test_optimizer_state_check_names_the_key(tmp_path):
    saved, path = _saved_state(tmp_path, "sgd", "SOLVER.HEAD_LR_MULT", "10")
    same = construct_optimizer(_Tiny(), load_config(None, ["SOLVER.HEAD_LR_MULT", "10"]))
    check_optimizer_state(same, saved, path)
    same.load_state_dict(saved)
    cases = {
        ("SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.HEAD_LR_MULT", "10"):
            r"optimizer state is for SOLVER.OPTIMIZING_METHOD 'sgd', this run builds 'adamw'",
        ("SOLVER.HEAD_LR_MULT", "5"): r"has lr_mult 10.0, this run 5.0; resume with the SOLVER.HEAD_LR_MULT",
        ("SOLVER.HEAD_LR_MULT", "1"): r"other parameter groups .*SOLVER.HEAD_LR_MULT",
        ("SOLVER.HEAD_LR_MULT", "10", "SOLVER.MOMENTUM", "0.8"): r"has momentum 0.9, this run 0.8",
    }
    for opts, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as err:
            check_optimizer_state(construct_optimizer(_Tiny(), load_config(None, list(opts))), saved, path)
        assert path in str(err.value)
    adam, adam_path = _saved_state(tmp_path, "adam")
    with pytest.raises(CheckpointError, match=r"has betas \(0.9, 0.999\), this run \(0.5, 0.999\)"):
        check_optimizer_state(construct_optimizer(_Tiny(), load_config(None, [
            "SOLVER.OPTIMIZING_METHOD", "adam", "SOLVER.BETAS", "[0.5, 0.999]"])), adam, adam_path)
    # A state written before groups recorded their method came from SGD.
    for group in saved["param_groups"]:
        del group["method"], group["lr_mult"]
    with pytest.raises(CheckpointError, match="is for SOLVER.OPTIMIZING_METHOD 'sgd'"):
        check_optimizer_state(construct_optimizer(_Tiny(), load_config(None, [
            "SOLVER.OPTIMIZING_METHOD", "adam", "SOLVER.HEAD_LR_MULT", "10"])), saved, path)


# ----------------------------------------------------------------------------- loss
def test_label_smoothing_loss_equals_the_hand_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4], [-3.0, 1.0, 2.0, -0.5]])
    labels = torch.tensor([0, 3, 2])
    s, k = 0.1, 4
    expected = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        log_z = math.log(sum(math.exp(z) for z in row))
        expected += sum(-((1 - s) * (j == y) + s / k) * (z - log_z) for j, z in enumerate(row)) / 3
    objective = TrainObjective.from_cfg(load_config(None, ["MODEL.LOSS_FUNC", "soft_cross_entropy",
                                                           "MODEL.NUM_CLASSES", "4"]))
    inputs = torch.randn(3, 3, 1, 2, 2)
    same_inputs, targets = objective.prepare(inputs, labels)
    assert same_inputs is inputs  # no mixing without MIXUP.ENABLE
    assert targets[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    assert objective.loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert objective.accuracy_labels(targets).tolist() == [0, 3, 2]
    # Without smoothing it is plain cross entropy; MODEL.LOSS_FUNC cross_entropy uses the hard labels.
    assert soft_cross_entropy(logits, smooth_one_hot(labels, 4, 0.0)).item() == pytest.approx(
        nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    hard = TrainObjective.from_cfg(load_config(None, ["MODEL.NUM_CLASSES", "4"]))
    assert hard.prepare(inputs, labels)[1] is labels and hard.accuracy_labels(labels) is labels


def test_mixup_and_freezing_keys_are_validated():
    bad = {
        ("MIXUP.ENABLE", "True"): "MODEL.LOSS_FUNC: invalid value 'cross_entropy' with MIXUP.ENABLE True",
        ("MIXUP.PROB", "1.5"): r"MIXUP.PROB: invalid value 1.5; allowed values: \[0, 1\]",
        ("MIXUP.ENABLE", "True", "MODEL.LOSS_FUNC", "soft_cross_entropy", "MIXUP.ALPHA", "0.0",
         "MIXUP.CUTMIX_ALPHA", "0.0"): "nothing to mix",
        ("SOLVER.OPTIMIZING_METHOD", "lamb"): "allowed values: sgd, adam, adamw",
        ("SOLVER.BETAS", "[0.9, 1.0]"): "SOLVER.BETAS: invalid value",
        ("SOLVER.HEAD_LR_MULT", "0.0"): "SOLVER.HEAD_LR_MULT: invalid value 0.0",
        ("TRAIN.FREEZE_UP_TO", "res6"): "allowed values: none, stem, res2, res3, res4, res5",
        ("BN.FREEZE_PARTIAL", "True"): "BN.FREEZE_PARTIAL / BN.FREEZE_AFFINE: set with BN.FREEZE False",
        ("BN.FREEZE", "True", "BN.USE_PRECISE_STATS", "True"): "would recompute the frozen BN statistics",
        ("BN.FREEZE", "True", "BN.FREEZE_PARTIAL", "True", "TRAIN.FREEZE_UP_TO", "stem"):
            "freezes the stem's BN it would keep training",
    }
    for opts, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, list(opts))


# ----------------------------------------------------------------------------- mixup / cutmix
def _batch(n=4, k=5):
    torch.manual_seed(3)
    inputs = torch.randn(n, 3, 2, 6, 7)
    return inputs, smooth_one_hot(torch.tensor([0, 1, 2, 3][:n]), k, 0.1)


def test_mixup_is_the_convex_combination_with_the_flipped_batch():
    x, q = _batch()
    lam = 0.3125
    mixed, targets = mixup(x, q, lam)
    assert torch.equal(mixed, lam * x + (1 - lam) * x[[3, 2, 1, 0]])
    assert torch.equal(targets, lam * q + (1 - lam) * q[[3, 2, 1, 0]])
    # The mixer draws lam ~ Beta(alpha, alpha) from the seeded global generator: same seed, same batch.
    mixer = Mixer(alpha=0.8, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5)
    torch.manual_seed(11)
    draw = mixer.draw(6, 7)
    assert draw.kind == "mixup" and 0.0 < draw.lam < 1.0
    torch.manual_seed(11)
    again, again_targets = mixer(x, q)
    assert torch.equal(again, draw.lam * x + (1 - draw.lam) * x.flip(0))
    assert torch.equal(again_targets, mixup(x, q, draw.lam)[1])
    assert Mixer(alpha=0.8, cutmix_alpha=1.0, prob=0.0, switch_prob=0.5).draw(6, 7) == MixDraw("none")


def test_cutmix_box_comes_from_the_partner_and_weights_are_the_area():
    x, q = _batch()
    box = (1, 4, 2, 7)  # rows 1..3, columns 2..6: 15 of 42 pixels
    mixed, targets = cutmix(x, q, box)
    inside = torch.zeros(6, 7, dtype=torch.bool)
    inside[1:4, 2:7] = True
    assert torch.equal(mixed[..., inside], x.flip(0)[..., inside])
    assert torch.equal(mixed[..., ~inside], x[..., ~inside])
    lam = 1 - 15 / 42
    torch.testing.assert_close(targets, lam * q + (1 - lam) * q.flip(0), rtol=0, atol=1e-7)

    # Drawn boxes (clipped at the border): the target weight is the exact fraction of pasted pixels.
    mixer = Mixer(alpha=0.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
    plain = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 2, 6, 7).contiguous()  # clip i is all i
    hard = smooth_one_hot(torch.arange(4), 4, 0.0)
    torch.manual_seed(5)
    seen = set()
    for _ in range(20):
        mixed, targets = mixer(plain, hard)
        pasted = (mixed[0] == 3.0).float().mean().item()  # clip 0's partner is clip 3
        assert torch.all((mixed[0] == 0.0) | (mixed[0] == 3.0))
        assert targets[0, 3].item() == pytest.approx(pasted, abs=1e-6)
        assert targets[0, 0].item() == pytest.approx(1 - pasted, abs=1e-6)
        seen.add(round(pasted, 4))
    assert len(seen) > 5


def test_training_accuracy_counts_the_dominant_label_of_the_mix():
    objective = TrainObjective.from_cfg(load_config(None, [
        "MODEL.LOSS_FUNC", "soft_cross_entropy", "MODEL.NUM_CLASSES", "4", "MIXUP.ENABLE", "True",
        "MIXUP.CUTMIX_ALPHA", "0.0"]))
    labels = torch.tensor([0, 1, 2, 3])
    targets = mixup(torch.zeros(4, 1), smooth_one_hot(labels, 4, 0.1), 0.7)[1]
    assert objective.accuracy_labels(targets).tolist() == [0, 1, 2, 3]
    targets = mixup(torch.zeros(4, 1), smooth_one_hot(labels, 4, 0.1), 0.2)[1]
    assert objective.accuracy_labels(targets).tolist() == [3, 2, 1, 0]


# ----------------------------------------------------------------------------- freezing
def _like_pretrained(model):
    """BN scales away from their init (0 in the last BN of each block, which would block the branch
    gradients when frozen) and running statistics away from 0 / 1, as in a trained checkpoint."""
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def _two_steps(cfg):
    torch.manual_seed(0)
    model = _like_pretrained(build_model(cfg))
    opt = construct_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        model.train()
        set_frozen_modes(model, cfg)
        set_lr(opt, 0.1)
        x = torch.randn(4, 3, 2, 32, 32, generator=gen)
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt, before


def _changed(model, before, key):
    return not torch.equal(model.state_dict()[key], before[key])


TINY = ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3", "SOLVER.WEIGHT_DECAY", "1e-3"]


def test_frozen_stages_do_not_move_and_the_rest_trains():
    cfg = load_config(None, [*TINY, "TRAIN.FREEZE_UP_TO", "res3"])
    model, opt, before = _two_steps(cfg)
    frozen = ("stem.", "res2.", "res3.")
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in in_optimizer) == (not name.startswith(frozen)), name
        assert p.requires_grad == (not name.startswith(frozen)), name
    for key in before:
        if key.startswith(frozen):
            assert not _changed(model, before, key), key  # weights and BN statistics, bit for bit
        elif not key.endswith("num_batches_tracked"):
            assert _changed(model, before, key), key
    assert model.state_dict()["res4.0.branch2.a_bn.num_batches_tracked"].item() == 2
    assert model.state_dict()["res3.0.branch2.a_bn.num_batches_tracked"].item() == 0


@pytest.mark.parametrize("affine", [True, False])
def test_partial_bn_keeps_only_the_first_bn_training(affine):
    cfg = load_config(None, [*TINY, "BN.FREEZE", "True", "BN.FREEZE_PARTIAL", "True", "BN.FREEZE_AFFINE", str(affine)])
    model, _, before = _two_steps(cfg)
    bn_layers = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm3d)]
    assert bn_layers[0] == "stem.bn" and len(bn_layers) > 40
    params = dict(model.named_parameters())
    affine_moved = []
    for layer in bn_layers:
        for leaf in ("running_mean", "running_var", "num_batches_tracked"):
            assert _changed(model, before, f"{layer}.{leaf}") == (layer == "stem.bn"), f"{layer}.{leaf}"
        for leaf in ("weight", "bias"):
            key = f"{layer}.{leaf}"
            trains = layer == "stem.bn" or not affine
            assert params[key].requires_grad == trains, key
            if trains:
                affine_moved.append(_changed(model, before, key))
            else:
                assert not _changed(model, before, key), key
    # A trainable scale or shift behind a ReLU that is dead for the whole tiny batch gets no gradient.
    assert sum(affine_moved) > 0.8 * len(affine_moved)
    for key in ("stem.conv.weight", "res2.0.branch2.a.weight", "res5.2.branch2.b.weight", "head.projection.weight"):
        assert _changed(model, before, key), key
    model.train()
    set_frozen_modes(model, cfg)
    assert [m.training for m in model.modules() if isinstance(m, nn.BatchNorm3d)] == [True] + [False] * (
        len(bn_layers) - 1)


def test_freeze_everything_up_to_res5_leaves_only_the_head():
    cfg = load_config(None, [*TINY, "TRAIN.FREEZE_UP_TO", "res5"])
    model = build_model(cfg)
    assert freeze_model(model, cfg) == sum(1 for n, _ in model.named_parameters() if not n.startswith("head."))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.projection.weight",
                                                                           "head.projection.bias"]
    assert STAGES == ("stem", "res2", "res3", "res4", "res5")


# ----------------------------------------------------------------------------- the UCF-101 recipe
def test_ucf101_recipe_takes_a_kinetics_checkpoint_with_a_new_head(tmp_path, repo_root):
    small = ["RESNET.WIDTH_PER_GROUP", "2"]
    kinetics_cfg = load_config(os.path.join(repo_root, "configs", "kinetics", "SLOW_8x8_R50.yaml"), small)
    kinetics = build_model(kinetics_cfg)
    path = cu.save_checkpoint(str(tmp_path / "kinetics"), 117, kinetics, None, None, kinetics_cfg)
    recipe = os.path.join(repo_root, "configs", "ucf101", "SLOW_8x8_R50_FINETUNE.yaml")
    cfg = load_config(recipe, [*small, "TRAIN.CHECKPOINT_FILE_PATH", path])
    assert (cfg.MODEL.NUM_CLASSES, cfg.MODEL.LOSS_FUNC, cfg.MIXUP.LABEL_SMOOTH_VALUE) == (
        101, "soft_cross_entropy", 0.1)
    assert (cfg.BN.FREEZE, cfg.BN.FREEZE_PARTIAL, cfg.SOLVER.HEAD_LR_MULT) == (True, True, 10.0)
    from video_gc.models.weights import load_pretrained

    model = build_model(cfg)
    report = load_pretrained(model, cfg)
    assert report.new_head == [("head.projection.weight", (400, 64), (101, 64)),
                               ("head.projection.bias", (400,), (101,))]
    assert not report.partial and sorted(report.loaded) == sorted(
        k for k in kinetics.state_dict() if not k.startswith("head.") and not k.endswith("num_batches_tracked"))
    assert torch.equal(model.res4[2].branch2.b.weight, kinetics.res4[2].branch2.b.weight)
    assert model.head.projection.weight.shape == (101, 64)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_fine_tune_from_a_checkpoint_with_another_class_count(tiny_data, tmp_path):
    source_cfg = load_config(CFG, tiny_opts(tiny_data, tmp_path / "pretrain", "MODEL.NUM_CLASSES", "3"))
    torch.manual_seed(7)
    source_model = _like_pretrained(build_model(source_cfg))
    source = cu.save_checkpoint(str(tmp_path / "pretrain"), 0, source_model, None, None, source_cfg)
    start = {k: v.clone() for k, v in source_model.state_dict().items()}

    out = tmp_path / "finetune"
    opts = tiny_opts(tiny_data, out, "TRAIN.CHECKPOINT_FILE_PATH", source, "TRAIN.CHECKPOINT_TYPE", "auto",
                     "TRAIN.CHECKPOINT_EPOCH_RESET", "True", "TRAIN.FREEZE_UP_TO", "res2", "BN.FREEZE", "True",
                     "SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.BASE_LR", "0.001",
                     "SOLVER.HEAD_LR_MULT", "10", "MODEL.LOSS_FUNC", "soft_cross_entropy", "MIXUP.ENABLE", "True",
                     "SOLVER.MAX_EPOCH", "1", "TEST.ENABLE", "False")
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 0
    log = (out / "log.txt").read_text()
    assert "head.projection.weight (new head: checkpoint [3, 64] vs model [4, 64])" in log
    assert "fine-tuning freeze: stages stem, res2" in log

    state = cu.read_checkpoint(str(out / "checkpoints" / "checkpoint_epoch_00001.pyth"))
    weights = state["model_state"]
    assert weights["head.projection.weight"].shape == (4, 64)
    bn_layers = {name for name, m in source_model.named_modules() if isinstance(m, nn.BatchNorm3d)}
    for key, value in weights.items():
        if key.startswith("head."):
            continue
        # Frozen: the stem and res2 whole, and every BN layer (statistics and affine).
        frozen = key.startswith(("stem.", "res2.")) or key.rsplit(".", 1)[0] in bn_layers
        assert torch.equal(value, start[key]) == frozen, key
    groups = state["optimizer_state"]["param_groups"]
    assert {g["method"] for g in groups} == {"adamw"}
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head_default"] == pytest.approx(10 * lr["default"]) and lr["default"] > 0
