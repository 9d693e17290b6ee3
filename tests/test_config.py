"""Bad configs stop with a message naming the key, the bad value and the allowed values."""

import pytest

from video_gc.config import ConfigError, load_config
from video_gc.models import build_model


def error_for(tmp_path, yaml_text=None, opts=()):
    path = None
    if yaml_text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path) if path else None, list(opts))
    return str(info.value)


def test_unknown_key_in_file_and_opts(tmp_path):
    msg = error_for(tmp_path, "CONTEXT:\n  TYPE: gc\n  RATIOS: 0.25\n")
    assert "bad.yaml" in msg and "CONTEXT.RATIOS" in msg and "unknown config key" in msg
    msg = error_for(tmp_path, opts=["DATA.NUM_FRAMS", "8"])
    assert "DATA.NUM_FRAMS" in msg and "did you mean DATA.NUM_FRAMES" in msg


@pytest.mark.parametrize(
    "opts, parts",
    [
        (["DATA.NUM_FRAMES", "abc"], ["DATA.NUM_FRAMES", "abc", "type str", "type int"]),
        (["CONTEXT.GC.LAYER_NORM", "[1]"], ["CONTEXT.GC.LAYER_NORM", "[1]", "type bool"]),
    ],
)
def test_wrong_type(tmp_path, opts, parts):
    msg = error_for(tmp_path, opts=opts)
    assert all(p in msg for p in parts), msg


@pytest.mark.parametrize(
    "opts, parts",
    [
        # invalid choices
        (["CONTEXT.TYPE", "gcnet"], ["CONTEXT.TYPE", "'gcnet'", "gc, snl, se", "cgd, na"]),
        (["MODEL.ARCH", "x3d"], ["MODEL.ARCH", "'x3d'", "slow, c2d, c2d_nopool, c2d_nl32, i3d"]),
        (["NONLOCAL.INSTANTIATION", "dot"], ["NONLOCAL.INSTANTIATION", "'dot'", "embedded_gaussian", "softmax"]),
        (["CONTEXT.TYPE", "cgd", "CONTEXT.POSITION", "afterAdd"], ["CONTEXT.POSITION", "'afterAdd'", "after_conv1, after_conv2"]),
        (["CONTEXT.TYPE", "gc", "CONTEXT.POSITION", "after_conv1"], ["CONTEXT.POSITION", "after1x1, afterAdd"]),
        (["CONTEXT.CGD.VARIANT", "v11"], ["CONTEXT.CGD.VARIANT", "'v11'", "v1", "v10"]),
        (["RESNET.DEPTH", "34"], ["RESNET.DEPTH", "34", "50, 101"]),
        (["NONLOCAL.GROUP", "[[1], [2], [1], [1]]"], ["NONLOCAL.GROUP", "[2]", "allowed values: [1]"]),
        # block indices past the stage depth
        (["CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [4], [], []]"], ["CONTEXT.LOCATION", "4", "res3", "0..3"]),
        (["NONLOCAL.LOCATION", "[[[]], [[]], [[6]], [[]]]"], ["NONLOCAL.LOCATION", "6", "res4", "0..5"]),
        (["RESNET.DEPTH", "101", "CONTEXT.LOCATION", "[[], [], [23], []]"], ["CONTEXT.LOCATION", "23", "0..22"]),
        (["CONTEXT.LOCATION", "[[], [1]]"], ["CONTEXT.LOCATION", "one entry per stage"]),
    ],
)
def test_invalid_choice_or_block_index(tmp_path, opts, parts):
    msg = error_for(tmp_path, opts=opts)
    assert all(p in msg for p in parts), msg


def test_location_in_yaml_and_depth_101_accepts_deep_indices(tmp_path):
    msg = error_for(tmp_path, "CONTEXT:\n  TYPE: gc\n  LOCATION: [[3], [], [], []]\n")
    assert "CONTEXT.LOCATION" in msg and "block index 3 in res2" in msg and "0..2" in msg
    ok = load_config(None, ["RESNET.DEPTH", "101", "CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [], [22], []]",
                            "RESNET.WIDTH_PER_GROUP", "4"])
    assert hasattr(build_model(ok).res4[22], "context")


def test_build_model_validates_programmatic_configs():
    cfg = load_config(None, [])
    cfg.CONTEXT.TYPE = "nl"
    with pytest.raises(ConfigError, match="CONTEXT.TYPE.*'nl'.*allowed values"):
        build_model(cfg)


@pytest.mark.parametrize(
    "opts, parts",
    [
        # malformed per-stage lists once crashed inside build_model with a bare TypeError
        (["NONLOCAL.LOCATION", "[[1], [], [], []]"], ["NONLOCAL.LOCATION", "[1]", "res2", "[[i, j, ...]] (one pathway)"]),
        (["RESNET.NUM_BLOCK_TEMP_KERNEL", "[3, 4, 6, 3]"], ["RESNET.NUM_BLOCK_TEMP_KERNEL", "res2", "one pathway"]),
        # PySlowFast asserts NUM_BLOCK_TEMP_KERNEL <= the stage's blocks; a silent clamp hid typos
        (["RESNET.NUM_BLOCK_TEMP_KERNEL", "[[3], [4], [9], [3]]"], ["NUM_BLOCK_TEMP_KERNEL", "[9]", "res4 has 6 blocks"]),
        (["RESNET.NUM_BLOCK_TEMP_KERNEL", "[[3], [4], [-1], [3]]"], ["NUM_BLOCK_TEMP_KERNEL", "[-1]", "0 <= n"]),
        (["RESNET.SPATIAL_STRIDES", "[[1], [0], [2], [2]]"], ["RESNET.SPATIAL_STRIDES", "[0]", "res3", "positive"]),
        (["RESNET.NUM_GROUPS", "0"], ["RESNET.NUM_GROUPS", "0", "a positive integer"]),
        (["NONLOCAL.POOL", "[[1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]"], ["NONLOCAL.POOL", "[[t, h, w], ...]"]),
        (["DATA.INPUT_CHANNEL_NUM", "[]"], ["DATA.INPUT_CHANNEL_NUM", "[]", "[C] with C > 0"]),
        (["CONTEXT.TYPE", "gc", "CONTEXT.LOCATION", "[[], [True], [], []]"], ["CONTEXT.LOCATION", "True", "0..3"]),
        # a block type with no block to go in would silently build the plain backbone
        (["CONTEXT.TYPE", "gc"], ["CONTEXT.LOCATION", "[[], [], [], []]", "CONTEXT.TYPE 'gc'", "no block"]),
        # PySlowFast keys that load but whose other values video_gc would silently ignore
        (["MODEL.HEAD_ACT", "sigmoid"], ["MODEL.HEAD_ACT", "'sigmoid'", "allowed values: 'softmax'", "not implement"]),
        (["BN.NUM_SPLITS", "2"], ["BN.NUM_SPLITS", "2", "allowed values: 1"]),
        (["DATA.REVERSE_INPUT_CHANNEL", "True"], ["DATA.REVERSE_INPUT_CHANNEL", "True", "allowed values: False"]),
    ],
)
def test_malformed_or_ignored_values(tmp_path, opts, parts):
    msg = error_for(tmp_path, opts=opts)
    assert all(p in msg for p in parts), msg


def test_bad_yaml_files_name_the_file(tmp_path):
    msg = error_for(tmp_path, "MODEL:\n  ARCH: [slow\n")
    assert "bad.yaml: not valid YAML" in msg and "line" in msg
    assert "bad.yaml: expected a mapping of config sections, got a list" in error_for(tmp_path, "- a\n- b\n")
    assert "bad.yaml: expected a mapping of config sections" in error_for(tmp_path, "")
    msg = error_for(tmp_path, "CONTEXT: gc\n")
    assert msg.endswith("config key CONTEXT: invalid value gc of type str; allowed values: a section with keys "
                        "TYPE, LOCATION, POSITION, GC, CGD, NA"), msg
    msg = error_for(tmp_path, "_BASE_: missing_base.yaml\n")
    assert f"config file not found: {tmp_path / 'missing_base.yaml'} (the _BASE_ of {tmp_path / 'bad.yaml'})" in msg


def test_a_config_of_the_earlier_version_is_read_as_it_was_meant(tmp_path, caplog):
    import logging

    import yaml

    from video_gc.config import ConfigError, get_cfg

    # A full config.yaml as runs wrote it before CONFIG_VERSION: every key, these two at values it never read.
    old = yaml.safe_load(get_cfg().dump())
    del old["CONFIG_VERSION"]
    old["DATA"].update(USE_OFFSET_SAMPLING=False, DECODING_SHORT_SIZE=256)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with caplog.at_level(logging.WARNING, logger="video_gc.config"):
        cfg = load_config(str(path))
    assert (cfg.DATA.USE_OFFSET_SAMPLING, cfg.DATA.DECODING_SHORT_SIZE, cfg.CONFIG_VERSION) == (True, 0, 2)
    assert ("ignoring DATA.USE_OFFSET_SAMPLING False, which it did not read; ignoring DATA.DECODING_SHORT_SIZE 256"
            in caplog.text)
    assert str(path) in caplog.text
    # The same file marked as the current version means what it says; a config written now round-trips.
    path.write_text(yaml.safe_dump({**old, "CONFIG_VERSION": 2}))
    cfg = load_config(str(path))
    assert (cfg.DATA.USE_OFFSET_SAMPLING, cfg.DATA.DECODING_SHORT_SIZE) == (False, 256)
    path.write_text(cfg.dump())
    assert load_config(str(path)) == cfg
    # A PySlowFast YAML (no video_gc keys) is read as written.
    path.write_text("DATA:\n  USE_OFFSET_SAMPLING: False\n")
    assert load_config(str(path)).DATA.USE_OFFSET_SAMPLING is False
    path.write_text("CONFIG_VERSION: 3\n")
    with pytest.raises(ConfigError, match="CONFIG_VERSION: invalid value 3; allowed values: 1..2"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="CONFIG_VERSION: invalid value 1"):
        load_config(None, ["CONFIG_VERSION", "1"])


def test_an_earlier_na_config_keeps_the_form_it_trained_with():
    from video_gc.config import get_cfg, upgrade_config

    import yaml

    old = yaml.safe_load(get_cfg().dump())
    del old["CONFIG_VERSION"]
    del old["CONTEXT"]["NA"]["STD_FORM"]
    old["CONTEXT"]["TYPE"] = "na"
    old["CONTEXT"]["GC"]["FUSION"] = "add"  # a bare string, as version 1 wrote it
    upgrade_config(old, "old.yaml", 2)
    assert old["CONTEXT"]["NA"]["STD_FORM"] == "biased" and old["CONFIG_VERSION"] == 2
    current = yaml.safe_load(get_cfg().dump())
    current["CONTEXT"]["TYPE"] = "na"
    upgrade_config(current, "new.yaml", 2)
    assert current["CONTEXT"]["NA"]["STD_FORM"] == "official"
