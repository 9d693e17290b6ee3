"""A run never reports wrong results silently and is never lost silently: another run's
checkpoints, a shared OUTPUT_DIR, low test coverage, outputs that cannot be written, a full
disk, SIGINT / SIGTERM, leftovers of a killed save, a GPU config on a CPU-only machine,
file permissions. Real runs, real files, real signals."""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from test_engine_e2e import CFG, REPO, _run_cli, _sha, _stats, tiny_data, tiny_opts  # noqa: F401 (fixture)
from video_gc.config import load_config
from video_gc.engine import checkpoint as cu
from video_gc.engine.launch import LOCK_FILE
from video_gc.engine.launch import main as run_net
from video_gc.engine.signals import EXIT_PREEMPTED
from video_gc.models import build_model
from video_gc.utils.io import CheckpointError, atomic_save

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
NO_JOB = ["TRAIN.ENABLE", "False", "TEST.ENABLE", "False"]


@pytest.fixture(scope="module")
def earlier_run(tiny_data, tmp_path_factory):
    """A finished 2-epoch training run (no test): checkpoint_epoch_00001 and 00002."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "TEST.ENABLE", "False")]) == 0
    return out


def _copy(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _checkpoints(out):
    return sorted(os.listdir(out / "checkpoints"))


def _start(cmd, **kwargs):
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def _long_run(data, out, *extra):
    """A run_net command that trains far longer than any test waits."""
    return [sys.executable, "tools/run_net.py", "--cfg", CFG, "--opts",
            *tiny_opts(data, out, "SOLVER.MAX_EPOCH", "500", "TRAIN.EVAL_PERIOD", "1000", "TEST.ENABLE", "False",
                       *extra)]


def _wait_for_training(proc, out):
    log = out / "log.txt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "iter 2/4" in log.read_text():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never started training: " + "".join(proc.communicate()))


def _session_processes(sid):
    """Live (not zombie) processes of session ``sid``, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


# --------------------------------------------------------------------------- another run's checkpoints
@pytest.mark.slow
def test_fresh_run_into_a_folder_with_checkpoints_stops_unless_told_to_overwrite(tiny_data, earlier_run, tmp_path,
                                                                                  capsys):
    out = _copy(earlier_run, tmp_path)
    kept = {name: _sha(out / "checkpoints" / name) for name in _checkpoints(out)}
    config = (out / "config.yaml").read_text()
    earlier_log = len((out / "log.txt").read_text())
    fresh = tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "1", "TRAIN.AUTO_RESUME", "False")

    assert run_net(["--cfg", CFG, "--opts", *fresh]) == 1
    printed = capsys.readouterr().out
    log = (out / "log.txt").read_text()[earlier_log:]
    assert "checkpoint_epoch_00001.pyth, checkpoint_epoch_00002.pyth" in log
    assert "TRAIN.AUTO_RESUME is False" in log and "TRAIN.OVERWRITE_CHECKPOINTS True" in log
    assert "training from scratch" not in log and "Traceback" not in printed
    assert {name: _sha(out / "checkpoints" / name) for name in _checkpoints(out)} == kept
    assert (out / "config.yaml").read_text() == config
    assert not (out / "test_metrics.json").exists()

    assert run_net(["--cfg", CFG, "--opts", *fresh, "TRAIN.OVERWRITE_CHECKPOINTS", "True"]) == 0
    log = (out / "log.txt").read_text()
    assert "deleted 3 checkpoint(s) of an earlier run" in log
    assert _checkpoints(out) == ["checkpoint_best.pyth", "checkpoint_epoch_00001.pyth"]
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["checkpoint"] == str(out / "checkpoints" / "checkpoint_epoch_00001.pyth")


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_tests_it(tiny_data, earlier_run, tmp_path):
    out = _copy(earlier_run, tmp_path)
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out)]) == 0
    log = (out / "log.txt").read_text()
    newest = out / "checkpoints" / "checkpoint_epoch_00002.pyth"
    assert f"training already complete (epoch 2 of 2, {newest}); testing" in log
    assert "continuing at epoch 3/2" not in log
    assert len(_stats(out, "train_epoch")) == 2  # nothing trained again
    assert json.loads((out / "test_metrics.json").read_text())["checkpoint"] == str(newest)


# --------------------------------------------------------------------------- one run per folder
@pytest.mark.slow
def test_second_run_on_a_busy_output_dir_exits_naming_the_holder(tiny_data, tmp_path):
    out = tmp_path / "busy"
    first = _start(_long_run(tiny_data, out))
    try:
        _wait_for_training(first, out)
        second = _run_cli(["tools/run_net.py", "--cfg", CFG, "--opts", *tiny_opts(tiny_data, out)], timeout=120)
        assert second.returncode == 1
        assert f"process {first.pid} on {socket.gethostname()} holds {out / LOCK_FILE}" in second.stdout
        assert "Traceback" not in second.stdout + second.stderr
        assert "another run uses this OUTPUT_DIR" not in (out / "log.txt").read_text()  # the first run's log
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == EXIT_PREEMPTED
    assert not (out / LOCK_FILE).exists()


def test_stale_lock_is_taken_over_and_the_lock_is_released_on_error(tiny_data, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / LOCK_FILE).write_text(f"{socket.gethostname()} {dead.pid}\n")
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, *NO_JOB)]) == 0
    assert f"took over {out / LOCK_FILE}, left by process {dead.pid}" in (out / "log.txt").read_text()
    assert not (out / LOCK_FILE).exists()
    # An error (nothing to test) releases it too.
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "TRAIN.ENABLE", "False")]) == 1
    assert not (out / LOCK_FILE).exists()
    # A lock that names no holder is never taken over on a guess.
    (out / LOCK_FILE).write_text("")
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, *NO_JOB)]) == 1
    assert (out / LOCK_FILE).exists()


# --------------------------------------------------------------------------- test coverage and outputs
def _list_with_missing_videos(tiny_data, folder, missing):
    """A data folder whose test list is the tiny one with its last ``missing`` videos gone."""
    entries = [line.split() for line in open(os.path.join(tiny_data, "test.csv")).read().splitlines()]
    kept = len(entries) - missing
    lines = [f"{os.path.join(tiny_data, path)} {label}" for path, label in entries[:kept]]
    lines += [f"{folder / f'gone_{i}.mp4'} {label}" for i, (_, label) in enumerate(entries[kept:])]
    folder.mkdir()
    (folder / "test.csv").write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.mark.slow
def test_test_below_min_coverage_keeps_metrics_and_fails(tiny_data, earlier_run, tmp_path):
    data = _list_with_missing_videos(tiny_data, tmp_path / "data", missing=3)
    ckpt = str(earlier_run / "checkpoints" / "checkpoint_epoch_00002.pyth")
    out = tmp_path / "run"
    opts = tiny_opts(data, out, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", ckpt)
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 1
    metrics = json.loads((out / "test_metrics.json").read_text())
    reason = "only 1 of the 4 test videos were evaluated (25.0%, below TEST.MIN_COVERAGE 0.95)"
    assert metrics["coverage_ok"] is False and metrics["coverage_problem"].startswith(reason)
    assert metrics["videos_evaluated"] == 1 and metrics["videos_failed"] == 3
    assert reason in (out / "log.txt").read_text()

    assert run_net(["--cfg", CFG, "--opts", *opts, "TEST.MIN_COVERAGE", "0.25"]) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["coverage_ok"] is True and metrics["coverage_problem"] is None


@pytest.mark.slow
def test_results_path_in_a_new_folder_and_an_output_that_cannot_be_written(tiny_data, earlier_run, tmp_path):
    ckpt = str(earlier_run / "checkpoints" / "checkpoint_epoch_00002.pyth")
    out = tmp_path / "run"
    opts = tiny_opts(tiny_data, out, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", ckpt)
    assert run_net(["--cfg", CFG, "--opts", *opts, "TEST.SAVE_RESULTS_PATH", "new/folder/preds.npz"]) == 0
    assert (out / "new" / "folder" / "preds.npz").is_file()

    (tmp_path / "a_file").write_text("not a folder")
    blocked = tmp_path / "a_file" / "preds.npz"
    (out / "test_metrics.json").unlink()
    assert run_net(["--cfg", CFG, "--opts", *opts, "TEST.SAVE_RESULTS_PATH", str(blocked)]) == 1
    assert json.loads((out / "test_metrics.json").read_text())["videos_evaluated"] == 4
    log = (out / "log.txt").read_text()
    assert f"could not write the predictions {blocked}" in log
    assert "1 output(s) could not be written" in log
    assert (out / "confusion_matrix.png").is_file()  # the outputs after it are still written


# --------------------------------------------------------------------------- full disk
def _file_size_limit(limit):
    """In the child: writes past ``limit`` bytes fail with EFBIG ("File too large"), as on a full disk."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_checkpoint_save_on_a_full_disk_is_one_logged_error_and_keeps_the_last_checkpoint(tiny_data, earlier_run,
                                                                                           tmp_path):
    out = _copy(earlier_run, tmp_path)
    kept = {name: _sha(out / "checkpoints" / name) for name in _checkpoints(out)}
    size = os.path.getsize(out / "checkpoints" / "checkpoint_epoch_00002.pyth")
    result = subprocess.run(
        [sys.executable, "tools/run_net.py", "--cfg", CFG, "--opts",
         *tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "3", "TEST.ENABLE", "False")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(size // 2))
    assert result.returncode == 1
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed and "inline_container" not in printed
    error = (out / "log.txt").read_text().splitlines()[-1]
    assert f"cannot save {out / 'checkpoints' / 'checkpoint_epoch_00003.pyth'}: File too large" in error
    assert "at least " in error and "bytes (" in error and f"in {out / 'checkpoints'}, which has " in error
    assert {name: _sha(out / "checkpoints" / name) for name in _checkpoints(out)} == kept  # no temp file left


def test_save_into_an_unusable_folder_names_it(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"cannot save .*a_file/x\.pyth: .*needs at least 4,000 bytes"):
        atomic_save({"w": torch.zeros(1000)}, str(tmp_path / "a_file" / "x.pyth"))


# --------------------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["sigint_to_the_group_like_ctrl_c", "sigterm_to_the_main_process"])
def test_signal_stops_cleanly_without_orphaned_workers(tiny_data, tmp_path, signum, to_group):
    out = tmp_path / "run"
    proc = _start(_long_run(tiny_data, out, "DATA_LOADER.NUM_WORKERS", "2"), start_new_session=True)
    _wait_for_training(proc, out)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    survivors = _session_processes(proc.pid)
    for pid in survivors:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == EXIT_PREEMPTED
    name = signal.Signals(signum).name
    assert (out / "log.txt").read_text().count(f"stopped by {name} at a checkpoint") == 1
    for noise in ("Traceback", "KeyboardInterrupt", "ConnectionResetError"):
        assert noise not in stdout + stderr, stdout[-2000:] + stderr[-2000:]
    assert survivors == []
    assert not (out / LOCK_FILE).exists()


# --------------------------------------------------------------------------- the output folder
def test_stale_temporary_checkpoint_files_are_removed_at_start(tiny_data, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    stale = out / "checkpoints" / ".tmp_k2x9_q7zcheckpoint_epoch_00003.pyth"
    stale.write_bytes(b"half a checkpoint")
    other = out / "checkpoints" / "notes.tmp"
    other.write_text("not ours")
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, *NO_JOB)]) == 0
    assert not stale.exists() and other.exists()
    assert f"removed 1 temporary file(s) of an interrupted checkpoint save: {stale}" in (out / "log.txt").read_text()


def test_output_dir_that_is_a_file_is_one_clear_error(tiny_data, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    result = _run_cli(["tools/run_net.py", "--cfg", CFG, "--opts", *tiny_opts(tiny_data, target, *NO_JOB)],
                      timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"error: OUTPUT_DIR {target} is a file, not a folder; choose another OUTPUT_DIR\n"


@pytest.mark.slow
def test_gpu_config_on_a_machine_without_cuda_runs_one_process_unless_asked(tiny_data, tmp_path):
    # The Kinetics config asks for NUM_GPUS 8; the README's command uses it as it is.
    kinetics = os.path.join(REPO, "configs", "kinetics", "SLOW_8x8_R50_GC.yaml")
    env = dict(ENV, CUDA_VISIBLE_DEVICES="")
    for procs, extra in ((1, []), (2, ["NUM_CPU_PROCESSES", "2"])):
        out = tmp_path / f"procs_{procs}"
        result = subprocess.run(
            [sys.executable, "tools/run_net.py", "--cfg", kinetics, "--init_method", f"file://{tmp_path}/rdzv{procs}",
             "--opts", "DATA.PATH_TO_DATA_DIR", tiny_data, "OUTPUT_DIR", str(out), *extra, *NO_JOB],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"{procs} process(es) on cpu" in result.stdout
        note = f"NUM_GPUS is 8 but no CUDA device is visible: running on the CPU with {procs} process(es)"
        assert (result.stdout + result.stderr).count(note) == 1


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_checkpoints_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    cfg = load_config(CFG, ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "4"])
    previous = os.umask(umask)
    try:
        path = cu.save_checkpoint(str(tmp_path), 0, build_model(cfg), cfg=cfg)
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == mode


def test_a_fine_tune_source_inside_the_run_folder_is_refused_not_deleted(tiny_data, earlier_run, tmp_path):
    out = _copy(earlier_run, tmp_path)
    source = out / "checkpoints" / "checkpoint_epoch_00001.pyth"
    before = _sha(source)
    opts = tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "1", "TRAIN.AUTO_RESUME", "False",
                     "TRAIN.OVERWRITE_CHECKPOINTS", "True", "TRAIN.CHECKPOINT_FILE_PATH", str(source))
    assert run_net(["--cfg", CFG, "--opts", *opts]) == 1
    assert "lies in this run's own" in (out / "log.txt").read_text()
    assert _sha(source) == before
