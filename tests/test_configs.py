"""Every shipped config builds and runs; exact parameter counts; PySlowFast YAMLs load unchanged."""

import glob
import os

import pytest
import torch

from video_gc.config import load_config
from video_gc.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
SMALL = ["RESNET.WIDTH_PER_GROUP", "4"]

# Issue 2, section 6 (400 classes, full width).
KINETICS_PARAMS = {
    "SLOW_8x8_R50": 32_454_096,
    "SLOW_8x8_R50_NL": 39_812_560,
    "SLOW_8x8_R50_SNL": 36_132_309,
    "SLOW_8x8_R50_GC5": 34_300_373,
    "SLOW_8x8_R50_GC": 42_455_005,
    "C2D_8x8_R50": 24_327_632,
    "C2D_8x8_R50_NL": 31_686_096,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def cfg_path(rel):
    return os.path.join(REPO, "configs", rel)


def test_expected_configs_exist():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in CONFIGS}
    expected = {f"kinetics/{n}.yaml" for n in KINETICS_PARAMS} | {"kinetics/SLOW_8x8_R50_SE.yaml",
                                                                 "kinetics/SLOW_8x8_R50_NA.yaml"}
    for ds in ("mini_kinetics", "ucf101"):
        expected |= {f"{ds}/C2D_32x2_R50{s}.yaml" for s in ("", "_CGD", "_NL")}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_builds_and_runs_small(path):
    cfg = load_config(path, SMALL)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(1, 3, cfg.DATA.NUM_FRAMES, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, cfg.MODEL.NUM_CLASSES) and torch.isfinite(out).all()
    assert cfg.TEST.NUM_ENSEMBLE_VIEWS == 10 and cfg.TEST.NUM_SPATIAL_CROPS == 3


@pytest.mark.parametrize("name, params", sorted(KINETICS_PARAMS.items()))
def test_kinetics_param_counts(name, params):
    assert n_params(build_model(load_config(cfg_path(f"kinetics/{name}.yaml")))) == params


def test_na_adds_32_and_se_is_every_block():
    base = n_params(build_model(load_config(cfg_path("kinetics/SLOW_8x8_R50.yaml"))))
    na = build_model(load_config(cfg_path("kinetics/SLOW_8x8_R50_NA.yaml")))
    assert n_params(na) - base == 32
    se = build_model(load_config(cfg_path("kinetics/SLOW_8x8_R50_SE.yaml")))
    blocks = [blk for s in range(2, 6) for blk in getattr(se, f"res{s}")]
    assert len(blocks) == 16 and all(hasattr(blk, "context") for blk in blocks)
    # SE-ResNet-50 (r = 16): 2 * C^2 / 16 + C / 16 + C per block, summed over the 16 blocks.
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert n_params(se) - base == sum(2 * c * c // 16 + c // 16 + c for c in widths)


@pytest.mark.parametrize("dataset, classes", [("mini_kinetics", 200), ("ucf101", 101)])
def test_cgd_adds_22656_whatever_the_clip_length(dataset, classes):
    base = load_config(cfg_path(f"{dataset}/C2D_32x2_R50.yaml"))
    assert base.MODEL.NUM_CLASSES == classes and base.MODEL.ARCH == "c2d_nl32"
    plain = n_params(build_model(base))
    for frames in ("32", "16"):
        cgd = build_model(load_config(cfg_path(f"{dataset}/C2D_32x2_R50_CGD.yaml"), ["DATA.NUM_FRAMES", frames]))
        assert n_params(cgd) - plain == 22_656
    nl = n_params(build_model(load_config(cfg_path(f"{dataset}/C2D_32x2_R50_NL.yaml"))))
    assert nl - plain == 2_101_760  # one NL block at C = 1024 (the CGD paper's "+2.10M")


def test_recipes():
    slow = load_config(cfg_path("kinetics/SLOW_8x8_R50_GC.yaml"))
    assert (slow.SOLVER.BASE_LR, slow.SOLVER.LR_POLICY, list(slow.SOLVER.STEPS), list(slow.SOLVER.LRS)) == (
        0.01, "steps_with_relative_lrs", [0, 44, 88, 118], [1, 0.1, 0.01, 0.001])
    assert slow.SOLVER.MAX_EPOCH == 118 and slow.TRAIN.CHECKPOINT_INFLATE and slow.CONTEXT.GC.RATIO == 0.25
    for ds in ("mini_kinetics", "ucf101"):
        cgd = load_config(cfg_path(f"{ds}/C2D_32x2_R50_CGD.yaml"))
        assert (cgd.DATA.NUM_FRAMES, cgd.DATA.SAMPLING_RATE, cgd.DATA.TRAIN_CROP_SIZE) == (32, 2, 224)
        assert list(cgd.DATA.TRAIN_JITTER_SCALES_RELATIVE) == [0.75, 1.0]
        assert (cgd.SOLVER.BASE_LR, list(cgd.SOLVER.STEPS), list(cgd.SOLVER.LRS), cgd.SOLVER.MAX_EPOCH) == (
            0.01, [0, 40, 80], [1, 0.1, 0.01], 100)
        assert cgd.SOLVER.WARMUP_EPOCHS > 0 and cgd.SOLVER.WEIGHT_DECAY == 1e-4
        assert cgd.CONTEXT.CGD.WEIGHT_DECAY_MULT == 0.5 and cgd.MODEL.DROPOUT_RATE == 0.5


# PySlowFast's configs/Kinetics YAMLs (facebookresearch/SlowFast), reassembled verbatim from their shared parts.
_PYSLOWFAST_COMMON = """TRAIN:
  ENABLE: True
  DATASET: kinetics
  BATCH_SIZE: 64
  EVAL_PERIOD: 10
  CHECKPOINT_PERIOD: 1
  AUTO_RESUME: True
DATA:
  NUM_FRAMES: 8
  SAMPLING_RATE: 8
  TRAIN_JITTER_SCALES: [256, 320]
  TRAIN_CROP_SIZE: 224
  TEST_CROP_SIZE: 256
  INPUT_CHANNEL_NUM: [3]
RESNET:
  ZERO_INIT_FINAL_BN: True
  WIDTH_PER_GROUP: 64
  NUM_GROUPS: 1
  DEPTH: 50
  TRANS_FUNC: bottleneck_transform
  STRIDE_1X1: False
  NUM_BLOCK_TEMP_KERNEL: [[3], [4], [6], [3]]
"""
_PYSLOWFAST_TAIL = """TEST:
  ENABLE: True
  DATASET: kinetics
  BATCH_SIZE: 64
DATA_LOADER:
  NUM_WORKERS: 8
  PIN_MEMORY: True
NUM_GPUS: 8
NUM_SHARDS: 1
RNG_SEED: 0
OUTPUT_DIR: .
"""
_NONLOCAL = """NONLOCAL:
  LOCATION: {location}
  GROUP: [[1], [1], [1], [1]]
  INSTANTIATION: {instantiation}
BN:
  USE_PRECISE_STATS: True
  NUM_BATCHES_PRECISE: 200
"""
_C2D_BN = """  MOMENTUM: 0.1
  WEIGHT_DECAY: 0.0
"""
_SOLVER = """SOLVER:
  BASE_LR: 0.1
  LR_POLICY: cosine
  MAX_EPOCH: 196
  MOMENTUM: 0.9
  WEIGHT_DECAY: 1e-4
  WARMUP_EPOCHS: {warmup}
  WARMUP_START_LR: 0.01
  OPTIMIZING_METHOD: sgd
MODEL:
  NUM_CLASSES: 400
  ARCH: {arch}
"""
_MODEL_NAME = "  MODEL_NAME: ResNet\n"
_MODEL_TAIL = """  LOSS_FUNC: cross_entropy
  DROPOUT_RATE: 0.5
"""
_NL5 = "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]"
_NONE = "[[[]], [[]], [[]], [[]]]"
PYSLOWFAST_YAMLS = {
    "C2D_NLN_8x8_R50": _PYSLOWFAST_COMMON + _NONLOCAL.format(location=_NL5, instantiation="softmax") + _C2D_BN
    + _SOLVER.format(warmup="34", arch="c2d") + _MODEL_TAIL + _PYSLOWFAST_TAIL,
    "SLOW_8x8_R50": _PYSLOWFAST_COMMON + _NONLOCAL.format(location=_NONE, instantiation="dot_product")
    + _SOLVER.format(warmup="34.0", arch="slow") + _MODEL_NAME + _MODEL_TAIL + _PYSLOWFAST_TAIL,
    "C2D_8x8_R50": _PYSLOWFAST_COMMON + _NONLOCAL.format(location=_NONE, instantiation="softmax") + _C2D_BN
    + _SOLVER.format(warmup="34", arch="c2d") + _MODEL_NAME + _MODEL_TAIL + _PYSLOWFAST_TAIL,
}
# Older PySlowFast releases: SLOWONLY_NLN_8x8_R50.yaml, ARCH "slowonly".
PYSLOWFAST_YAMLS["SLOWONLY_NLN_8x8_R50"] = (
    _PYSLOWFAST_COMMON + _NONLOCAL.format(location=_NL5, instantiation="dot_product") + _C2D_BN
    + _SOLVER.format(warmup="34", arch="slowonly") + _MODEL_TAIL + _PYSLOWFAST_TAIL)
# PySlowFast YAML -> (our config of the same network, exact params).
PYSLOWFAST_MATCH = {
    "SLOWONLY_NLN_8x8_R50": ("SLOW_8x8_R50_NL", 39_812_560),
    "C2D_NLN_8x8_R50": ("C2D_8x8_R50_NL", 31_686_096),
    "SLOW_8x8_R50": ("SLOW_8x8_R50", 32_454_096),
    "C2D_8x8_R50": ("C2D_8x8_R50", 24_327_632),
}


@pytest.mark.parametrize("name", sorted(PYSLOWFAST_YAMLS))
def test_pyslowfast_yaml_loads_unchanged_and_builds_the_same_network(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(PYSLOWFAST_YAMLS[name])
    cfg = load_config(str(path))
    assert cfg.SOLVER.WARMUP_EPOCHS == 34.0 and cfg.NUM_GPUS == 8
    model = build_model(cfg)
    ours_name, params = PYSLOWFAST_MATCH[name]
    assert n_params(model) == params
    ours = build_model(load_config(cfg_path(f"kinetics/{ours_name}.yaml")))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
