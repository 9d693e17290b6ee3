"""run_net reads the data lists before it starts processes or trains."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_net(*opts):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "run_net.py"),
         "--cfg", os.path.join(REPO, "configs", "kinetics", "SLOW_8x8_R50_GC.yaml"), "--opts", *opts],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )


def test_missing_list_is_one_error_before_any_process_starts(tmp_path):
    # The Kinetics config asks for NUM_GPUS 8: without the check, 8 processes would each fail.
    out = _run_net("DATA.PATH_TO_DATA_DIR", str(tmp_path), "OUTPUT_DIR", str(tmp_path / "run"))
    assert out.returncode == 2
    expected = f"data list not found: {tmp_path / 'train.csv'}"
    assert (out.stdout + out.stderr).count(expected) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_malformed_test_list_stops_the_run_before_training(tmp_path, make_video):
    video = make_video("a.mp4", num_frames=16)
    (tmp_path / "train.csv").write_text(f"{video} 0\n")
    (tmp_path / "test.csv").write_text(f"{video} 0\n{video} seven\n")
    out = _run_net("DATA.PATH_TO_DATA_DIR", str(tmp_path), "OUTPUT_DIR", str(tmp_path / "run"), "NUM_GPUS", "1")
    assert out.returncode == 2
    assert f"{tmp_path / 'test.csv'}:2: label 'seven' is not an integer" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()
