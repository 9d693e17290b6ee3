"""No silent config keys: every default key is read by the code or is a reported compatibility
key; the start-of-run report; DATA.DECODING_SHORT_SIZE, USE_OFFSET_SAMPLING, TRAIN_JITTER_FPS
and INV_UNIFORM_SAMPLE change the data the way PySlowFast's do."""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from fvcore.common.config import CfgNode
from torchvision.transforms.v2 import functional as F

from video_gc.config import get_cfg
from video_gc.config.compat import COMPAT_KEYS
from video_gc.data import VideoDataset, open_video
from video_gc.data import transforms as T
from video_gc.data.dataset import item_generator
from video_gc.data.sampling import eval_clip_indices, train_clip_indices
from video_gc.data.synthetic_clips import read_frame_index, write_indexed_video
from video_gc.engine.launch import main as run_net
from video_gc.utils.video_io import write_video

REPO = pathlib.Path(__file__).resolve().parents[1]
REPORT = "loaded but not used by video_gc: "


# --------------------------------------------------------------------------- (a) every key is read
def _leaf_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if isinstance(value, CfgNode) else [prefix + name]
    return keys


def _source_reads() -> tuple[set, set]:
    """(section, leaf) of every attribute access in the package and tools (section None when the
    object is a plain name, e.g. ``data = cfg.DATA; data.X``), and every string constant
    (the validation tables name keys as "SECTION.KEY")."""
    attrs, strings = set(), set()
    skip = {REPO / "video_gc" / "config" / "defaults.py", REPO / "video_gc" / "config" / "compat.py"}
    for path in [*(REPO / "video_gc").rglob("*.py"), *(REPO / "tools").rglob("*.py")]:
        if path in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                section = node.value.attr if isinstance(node.value, ast.Attribute) else None
                attrs.add((section, node.attr))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return attrs, strings


def _is_read(key: str, attrs: set, strings: set) -> bool:
    *sections, leaf = key.split(".")
    if key in strings:
        return True
    if not sections:
        return any(name == leaf for _, name in attrs)
    return (sections[-1], leaf) in attrs or (None, leaf) in attrs


def test_every_default_key_is_read_or_a_compatibility_key():
    attrs, strings = _source_reads()
    silent = [key for key in _leaf_keys(get_cfg()) if key not in COMPAT_KEYS and not _is_read(key, attrs, strings)]
    assert silent == [], f"default keys nothing reads: {silent}; read them or add them to COMPAT_KEYS"


def test_compatibility_keys_are_real_unread_and_listed_once():
    attrs, strings = _source_reads()
    assert len(set(COMPAT_KEYS)) == len(COMPAT_KEYS)
    assert set(COMPAT_KEYS) <= set(_leaf_keys(get_cfg()))
    # A key the code reads must not be reported as unused.
    assert [key for key in COMPAT_KEYS if _is_read(key, attrs, strings)] == []


# --------------------------------------------------------------------------- (b) the report at start
def _report_lines(text: str) -> list[str]:
    return [line[line.index(REPORT) + len(REPORT):] for line in text.splitlines() if REPORT in line]


NO_JOB = ["TRAIN.ENABLE", "False", "TEST.ENABLE", "False", "NUM_GPUS", "0"]


def test_start_reports_the_compatibility_keys_a_yaml_set_once(tmp_path):
    cfg_file = tmp_path / "pyslowfast.yaml"
    cfg_file.write_text(
        "MODEL:\n  ARCH: slow\n  SINGLE_PATHWAY_ARCH: [slow]\n"
        "DATA:\n  TRAIN_JITTER_MOTION_SHIFT: True\n  DECODING_SHORT_SIZE: 128\n"  # the latter is implemented
        "SOLVER:\n  WARMUP_FACTOR: 0.1\n"  # a compatibility key at its default asks for nothing
    )
    out = tmp_path / "run"
    assert run_net(["--cfg", str(cfg_file), "--opts", "OUTPUT_DIR", str(out), "BN.NUM_SYNC_DEVICES", "4",
                    *NO_JOB]) == 0
    lines = _report_lines((out / "log.txt").read_text())
    assert lines == ["DATA.TRAIN_JITTER_MOTION_SHIFT, MODEL.SINGLE_PATHWAY_ARCH, BN.NUM_SYNC_DEVICES"]


def test_a_full_config_dump_at_defaults_reports_nothing(tmp_path):
    # A PySlowFast-style dump names every key (tuples as YAML lists) and sets none of them.
    cfg_file = tmp_path / "dump.yaml"
    cfg_file.write_text(get_cfg().dump())
    out = tmp_path / "run"
    assert run_net(["--cfg", str(cfg_file), "--opts", "OUTPUT_DIR", str(out), *NO_JOB]) == 0
    log = (out / "log.txt").read_text()
    assert "output dir" in log and _report_lines(log) == []


def test_demo_net_reports_at_start(tmp_path, caplog):
    from video_gc.engine.predict import main_predict

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("TEST:\n  DATASET: ssv2\n")
    # The report comes right after the config loads, before the (missing) video stops the run.
    assert main_predict(str(cfg_file), str(tmp_path / "missing.mp4"), opts=["NUM_GPUS", "0"]) == 1
    assert _report_lines(caplog.text) == ["TEST.DATASET"]


@pytest.mark.slow
def test_two_process_run_reports_once(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("LOG_MODEL_INFO: False\n")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
    # Rank 1 prints warnings to the console too: a report there would show up in stdout.
    result = subprocess.run(
        [sys.executable, "tools/run_net.py", "--cfg", str(cfg_file), "--init_method", f"file://{tmp_path}/rdzv",
         "--opts", "OUTPUT_DIR", str(out), "TRAIN.ENABLE", "False", "TEST.ENABLE", "False", "NUM_GPUS", "2", "NUM_CPU_PROCESSES", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert _report_lines(result.stdout + result.stderr) == ["LOG_MODEL_INFO"]
    assert _report_lines((out / "log.txt").read_text()) == ["LOG_MODEL_INFO"]


# --------------------------------------------------------------------------- data keys
MEAN, STD = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]


def data_cfg(data_dir, **overrides):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(data_dir)
    cfg.MODEL.NUM_CLASSES = 1
    cfg.DATA_LOADER.NUM_WORKERS = 0
    for key, value in overrides.items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return cfg


def write_one_video_lists(folder, name, copies=1):
    for split in ("train", "val", "test"):
        (folder / f"{split}.csv").write_text(f"{name} 0\n" * copies)


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """A real 96x128 H.264 video of moving smooth texture, listed once in every split."""
    folder = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(14, 18, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)
    frames = np.stack([np.roll(base, shift=(i, 2 * i), axis=(0, 1))[:96, :128] for i in range(24)])
    write_video(str(folder / "v.mp4"), np.ascontiguousarray(frames), fps=30.0)
    write_one_video_lists(folder, "v.mp4")
    return folder


SMALL_CLIPS = {"DATA.NUM_FRAMES": 4, "DATA.SAMPLING_RATE": 2, "DATA.TEST_CROP_SIZE": 48,
               "DATA.TRAIN_CROP_SIZE": 48, "DATA.TRAIN_JITTER_SCALES": [56, 72],
               "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3}


def naive_test_views(path, short_side):
    """Decode each clip, resize it by hand to ``short_side`` (None: no such step), then the usual
    test transform: short side 48, three 48-pixel crops, normalise."""
    decoder = open_video(str(path), "decord")
    clips = eval_clip_indices(decoder.num_frames, decoder.fps, num_frames=4, sampling_rate=2, target_fps=30,
                              num_clips=2)
    views = []
    for frame_ids in clips:
        frames = decoder.get_frames(frame_ids).permute(0, 3, 1, 2)
        if short_side:
            frames = F.resize(frames, [short_side], antialias=True)
        frames = F.resize(frames, [48], antialias=True)
        views += [T.normalize(crop, MEAN, STD) for crop in T.eval_crops(frames, 48, 3)]
    decoder.close()
    return torch.stack(views)


def test_decoding_short_size_off_by_default_keeps_the_test_views(textured):
    assert get_cfg().DATA.DECODING_SHORT_SIZE == 0
    views = VideoDataset(data_cfg(textured, **SMALL_CLIPS), "test")[0]["inputs"]
    assert torch.equal(views, naive_test_views(textured / "v.mp4", None))


@pytest.mark.parametrize("short_side", [64, 120])  # 96 -> 64 shrinks, 96 -> 120 enlarges
def test_decoding_short_size_resizes_decoded_test_frames_first(textured, short_side):
    cfg = data_cfg(textured, **SMALL_CLIPS, **{"DATA.DECODING_SHORT_SIZE": short_side})
    views = VideoDataset(cfg, "test")[0]["inputs"]
    expected = naive_test_views(textured / "v.mp4", short_side)
    assert torch.equal(views, expected)
    assert not torch.equal(expected, naive_test_views(textured / "v.mp4", None))  # the step changes pixels


def test_decoding_short_size_resizes_decoded_train_frames_first(textured):
    cfg = data_cfg(textured, **SMALL_CLIPS, **{"DATA.DECODING_SHORT_SIZE": 64})
    inputs = VideoDataset(cfg, "train")[0]["inputs"]
    # By hand, with the item's own generator: sample, decode, resize to 64, then the usual jitter/crop/flip.
    generator = item_generator(cfg.RNG_SEED, 0, 0, 0)
    decoder = open_video(str(textured / "v.mp4"), "decord")
    frame_ids = train_clip_indices(decoder.num_frames, decoder.fps, num_frames=4, sampling_rate=2, target_fps=30,
                                   generator=generator)
    frames = F.resize(decoder.get_frames(frame_ids).permute(0, 3, 1, 2), [64], antialias=True)
    decoder.close()
    video = T.random_short_side_crop(frames, jitter_scales=[56, 72], crop_size=48, generator=generator)
    expected = T.normalize(T.random_hflip(video, generator), MEAN, STD)
    assert torch.equal(inputs, expected)
    default = VideoDataset(data_cfg(textured, **SMALL_CLIPS), "train")[0]["inputs"]
    assert not torch.equal(inputs, default)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """300 frames at 30 fps whose frames encode their own index, listed 30 times."""
    folder = tmp_path_factory.mktemp("indexed_keys")
    write_indexed_video(str(folder / "v.mp4"), 300, fps=30.0, height=64, width=96)
    write_one_video_lists(folder, "v.mp4", copies=30)
    return folder


def frame_numbers(clip):
    """The frame index drawn into each frame of a normalised [3, T, H, W] clip."""
    pixels = (clip * STD[0] + MEAN[0]).mul(255).clamp(0, 255)
    return [read_frame_index(pixels[:, t], channels_first=True) for t in range(clip.shape[1])]


def test_use_offset_sampling_places_the_test_clips(indexed):
    # 8 x 8 clips: span 64, delta = 300 - 64 = 236, frames start + 9k.
    def clips(use_offset, split="test"):
        cfg = data_cfg(indexed, **{"DATA.USE_OFFSET_SAMPLING": use_offset, "DATA.TEST_CROP_SIZE": 48,
                                   "TEST.NUM_ENSEMBLE_VIEWS": 4, "TEST.NUM_SPATIAL_CROPS": 1})
        inputs = VideoDataset(cfg, split)[0]["inputs"]
        return [frame_numbers(view) for view in inputs] if split == "test" else frame_numbers(inputs)

    def expected(starts):
        return [[int(start + 9 * k) for k in range(8)] for start in starts]

    assert clips(True) == expected([236 * i / 3 for i in range(4)])  # first to last frame (the default)
    assert clips(False) == expected([236 * i / 4 for i in range(4)])  # PySlowFast: delta * i / num_clips
    assert clips(False, "val") == expected([236 / 2])[0]  # val keeps its centre clip


def test_train_jitter_fps_shortens_the_train_clip_span(indexed):
    # A 48-pixel crop of 48 x 72 frames keeps every index band whole.
    def spans(jitter):
        cfg = data_cfg(indexed, **{"DATA.TRAIN_JITTER_FPS": jitter, "DATA.TRAIN_JITTER_SCALES": [48, 48],
                                   "DATA.TRAIN_CROP_SIZE": 48, "DATA.RANDOM_FLIP": False})
        dataset = VideoDataset(cfg, "train")
        return [frame_numbers(dataset[i]["inputs"]) for i in range(len(dataset))]

    # 30 fps: 8 frames every 9, a span of 63 frames.
    assert all(numbers == [numbers[0] + 9 * k for k in range(8)] for numbers in spans(0.0))
    # Target fps in [30, 60): the span shrinks to between 32 and 64 frames, never grows (PySlowFast).
    jittered = [numbers[-1] - numbers[0] for numbers in spans(30.0)]
    assert all(30 <= span <= 63 for span in jittered), jittered
    assert sum(span < 60 for span in jittered) >= 20 and len(set(jittered)) >= 10, jittered


def test_inv_uniform_sample_favours_small_jitter_sizes(tmp_path):
    # Grey rises by 255 / 95 per pixel across a 96-wide frame: after resizing the 64-pixel short
    # side to S the slope is 255 / 95 * 64 / S, so a crop's slope gives the drawn S.
    ramp = np.linspace(0, 255, 96).astype(np.uint8)
    frames = np.ascontiguousarray(np.broadcast_to(ramp[None, None, :, None], (8, 64, 96, 3)))
    write_video(str(tmp_path / "ramp.mp4"), frames, fps=30.0)
    write_one_video_lists(tmp_path, "ramp.mp4", copies=60)

    def drawn_sizes(inverse):
        cfg = data_cfg(tmp_path, **{"DATA.INV_UNIFORM_SAMPLE": inverse, "DATA.TRAIN_JITTER_SCALES": [48, 192],
                                    "DATA.TRAIN_CROP_SIZE": 48, "DATA.RANDOM_FLIP": False,
                                    "DATA.NUM_FRAMES": 2, "DATA.SAMPLING_RATE": 2})
        dataset = VideoDataset(cfg, "train")
        sizes = []
        for i in range(len(dataset)):
            profile = (dataset[i]["inputs"] * STD[0] + MEAN[0]).mul(255).mean(dim=(0, 1, 2))[8:40].double()
            slope = np.polyfit(np.arange(32), profile.numpy(), 1)[0]
            sizes.append(255 / 95 * 64 / slope)
        return np.array(sizes)

    # P(S < 96): 1/3 for uniform(48, 192); 2/3 for 1 / uniform(1/192, 1/48).
    uniform, inverse = drawn_sizes(False), drawn_sizes(True)
    assert uniform.min() > 40 and uniform.max() < 215
    assert (uniform < 96).mean() < 0.5 < (inverse < 96).mean(), (np.sort(uniform), np.sort(inverse))
