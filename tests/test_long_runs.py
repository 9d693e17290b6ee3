"""Week-long runs: exact mid-epoch resume after SIGKILL, preemption signals, a second Ctrl-C,
torchrun's elastic restarts, two torchrun "nodes" on this machine, checkpoint housekeeping and
resuming from a chosen checkpoint. Real processes, real signals, real files."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from test_engine_e2e import CFG, NUM_VIDEOS_TEST, REPO, _stats, tiny_data, tiny_opts  # noqa: F401 (fixture)
from test_engine_units import tensorboard_scalars
from test_run_safety import _session_processes
from video_gc.engine import checkpoint as cu
from video_gc.engine.launch import main as run_net
from video_gc.engine.signals import EXIT_PREEMPTED

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
# 16 train videos in global batches of 2: 8 iterations an epoch, latest written after every one.
EIGHT_ITERS = ["TRAIN.BATCH_SIZE", "2", "TRAIN.CHECKPOINT_PERIOD_ITERS", "1", "TRAIN.EVAL_PERIOD", "10"]


def _cmd(data, out, *extra):
    return [sys.executable, "tools/run_net.py", "--cfg", CFG, "--opts", *tiny_opts(data, out, *extra)]


def _start(cmd, **kwargs):
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def _wait_for_log(proc, log, pattern, *, since=0, timeout=180):
    """Wait until the log, from byte ``since`` on, matches ``pattern``; returns the match."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and (found := re.search(pattern, log.read_text()[since:])):
            return found
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"{pattern!r} never appeared in {log}: " + "".join(proc.communicate())[-3000:])


def _weights(path):
    return cu.read_checkpoint(str(path))["model_state"]


def _assert_same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


# --------------------------------------------------------------------------- exact mid-epoch resume
@pytest.mark.slow
def test_three_sigkills_mid_epoch_resume_to_the_uninterrupted_weights(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    settings = (*EIGHT_ITERS, "TEST.ENABLE", "False", "TENSORBOARD.ENABLE", "True")
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, straight, *settings)]) == 0

    out, log = tmp_path / "killed", tmp_path / "killed" / "log.txt"
    cmd = _cmd(tiny_data, out, *settings)
    # Iterations of epoch 2 (never its end), two apart: a kill lands a step or so after its line is seen.
    kills = random.Random(time.time()).choice([(2, 4, 6), (2, 4, 7), (2, 5, 7), (3, 5, 7)])
    resumed_at = []
    for kill in kills:
        since = log.stat().st_size if log.exists() else 0
        proc = _start(cmd)
        _wait_for_log(proc, log, "epoch 2/2 iter (" + "|".join(map(str, range(kill, 8))) + ")/8", since=since)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        text = log.read_text()[since:]
        assert "epoch 2/2 done" not in text, "the run finished its epoch before the kill"
        resumed_at += re.findall(r"resumed from \S+: continuing at epoch (\d+)/2, iteration (\d+)", text)
    since = log.stat().st_size
    final = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    text = log.read_text()
    resumed_at += re.findall(r"resumed from \S+: continuing at epoch (\d+)/2, iteration (\d+)", text[since:])
    # Every rerun resumed part-way through epoch 2, never further back than the iteration logged before the kill.
    assert len(resumed_at) == 3
    for (epoch, iteration), kill in zip(resumed_at, kills):
        assert epoch == "2" and int(iteration) - 1 >= kill - 1

    _assert_same_weights(_weights(out / "checkpoints" / "checkpoint_epoch_00002.pyth"),
                         _weights(straight / "checkpoints" / "checkpoint_epoch_00002.pyth"))
    # Each step is in the stats once, with the uninterrupted run's loss; the latest file was superseded.
    steps = [(r["epoch"], r["iter"]) for r in _stats(out, "train_iter")]
    assert steps == [(e, i) for e in (1, 2) for i in range(1, 9)]
    np.testing.assert_allclose([r["loss"] for r in _stats(out, "train_iter")],
                               [r["loss"] for r in _stats(straight, "train_iter")], rtol=1e-5)
    assert [r["epoch"] for r in _stats(out, "train_epoch")] == [1, 2]
    assert not (out / "checkpoints" / cu.LATEST).exists()
    # TensorBoard, read by its own (legacy) loader: the same, each step once, on the iteration axis
    killed_tb, straight_tb = tensorboard_scalars(out / "tensorboard"), tensorboard_scalars(straight / "tensorboard")
    assert [step for step, _ in killed_tb["train_iter/loss"]] == list(range(1, 17))
    assert [step for step, _ in killed_tb["train_epoch/loss"]] == [8, 16]
    for tag in ("train_iter/loss", "train_epoch/loss", "val_epoch/top1"):
        assert [step for step, _ in killed_tb[tag]] == [step for step, _ in straight_tb[tag]], tag
        np.testing.assert_allclose([v for _, v in killed_tb[tag]], [v for _, v in straight_tb[tag]], rtol=1e-5)
    assert len(list((out / "tensorboard").glob("events.*"))) == 4  # one file per process: four processes


# --------------------------------------------------------------------------- preemption signals
@pytest.mark.slow
@pytest.mark.parametrize("signum, to_group", [(signal.SIGTERM, True), (signal.SIGUSR1, False)],
                         ids=["sigterm_to_the_group", "sigusr1_to_the_main_process"])
def test_stop_signal_writes_latest_and_exits_75_then_the_same_command_resumes(tiny_data, tmp_path, signum,
                                                                               to_group):
    out, log = tmp_path / "run", tmp_path / "run" / "log.txt"
    cmd = _cmd(tiny_data, out, "SOLVER.MAX_EPOCH", "500", "TRAIN.EVAL_PERIOD", "1000", "TEST.ENABLE", "False",
               "DATA_LOADER.NUM_WORKERS", "2")
    proc = _start(cmd, start_new_session=True)
    _wait_for_log(proc, log, r"iter 2/4")
    if to_group:  # as schedulers send it: the DataLoader workers get it too
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, stdout[-2000:] + stderr[-2000:]
    assert _session_processes(proc.pid) == []
    text = log.read_text()
    name = signal.Signals(signum).name
    assert text.count(f"stopped by {name} at a checkpoint") == 1
    assert "Traceback" not in stdout + stderr
    # The checkpoint holds the step logged last: the stop came within one step of the signal.
    last_epoch, last_iter = map(int, re.findall(r"epoch (\d+)/500 iter (\d+)/4", text)[-1])
    state = cu.read_checkpoint(str(out / "checkpoints" / cu.LATEST))
    progress = cu.progress_of(state)
    assert (progress.epoch + 1, progress.iteration) == (last_epoch, last_iter)
    assert progress.meter["epoch"]["clips"] == 4 * last_iter and progress.global_batch == 4

    # The same command resumes there, and a second signal stops it again at a checkpoint.
    since = log.stat().st_size
    proc = _start(cmd, start_new_session=True)
    found = _wait_for_log(proc, log, r"resumed from (\S+): continuing at epoch (\d+)/500, iteration (\d+)",
                          since=since)
    assert found.group(1).endswith(cu.LATEST)
    assert (int(found.group(2)), int(found.group(3))) == (last_epoch, last_iter + 1)
    _wait_for_log(proc, log, rf"epoch {last_epoch + 1}/500 iter 1/4", since=since)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED


@pytest.mark.slow
def test_sigterm_to_the_group_of_spawned_processes_stops_all_at_a_checkpoint(tiny_data, tmp_path):
    """NUM_CPU_PROCESSES 2 without torchrun, SIGTERM to every process (as schedulers send it):
    parent, both ranks and their DataLoader workers. One checkpoint, status 75, nothing left running."""
    out, log = tmp_path / "run", tmp_path / "run" / "log.txt"
    proc = _start(_cmd(tiny_data, out, "SOLVER.MAX_EPOCH", "500", "TRAIN.EVAL_PERIOD", "1000", "TEST.ENABLE",
                       "False", "NUM_CPU_PROCESSES", "2", "DATA_LOADER.NUM_WORKERS", "1"), start_new_session=True)
    _wait_for_log(proc, log, r"iter 2/4")
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    time.sleep(1.0)
    survivors = _session_processes(proc.pid)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == EXIT_PREEMPTED, stdout[-2000:] + stderr[-2000:]
    assert survivors == []
    assert log.read_text().count("stopped by SIGTERM at a checkpoint") == 1
    last_epoch, last_iter = map(int, re.findall(r"epoch (\d+)/500 iter (\d+)/4", log.read_text())[-1])
    progress = cu.progress_of(cu.read_checkpoint(str(out / "checkpoints" / cu.LATEST)))
    assert (progress.epoch + 1, progress.iteration) == (last_epoch, last_iter)


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once(tiny_data, tmp_path):
    """Steps of about a second: the second Ctrl-C lands while the first waits for the step to end."""
    out, log = tmp_path / "run", tmp_path / "run" / "log.txt"
    cmd = _cmd(tiny_data, out, "SOLVER.MAX_EPOCH", "500", "TEST.ENABLE", "False", "RESNET.WIDTH_PER_GROUP", "16",
               "DATA.NUM_FRAMES", "8", "DATA_LOADER.NUM_WORKERS", "2")
    proc = _start(cmd, start_new_session=True)
    _wait_for_log(proc, log, r"iter 1/4")
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    time.sleep(1.0)  # the DataLoader workers notice that their parent is gone
    survivors = _session_processes(proc.pid)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT
    assert "second SIGINT: exiting at once" in stderr
    assert not (out / "checkpoints" / cu.LATEST).exists()
    assert survivors == []


# --------------------------------------------------------------------------- torchrun
def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _worker_pids(agent_pid):
    """Worker processes started by the torchrun agent ``agent_pid``: {LOCAL_RANK: pid}."""
    workers = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != agent_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"LOCAL_RANK" in env:
            workers[int(env[b"LOCAL_RANK"])] = int(entry)
    return workers


@pytest.mark.slow
def test_torchrun_restarts_after_a_killed_worker_and_resumes(tiny_data, tmp_path):
    out, log = tmp_path / "elastic", tmp_path / "elastic" / "log.txt"
    opts = tiny_opts(tiny_data, out, *EIGHT_ITERS, "SOLVER.MAX_EPOCH", "3", "NUM_GPUS", "0", "TEST.ENABLE", "False")
    proc = _start(_torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1", "tools/run_net.py",
                            "--cfg", CFG, "--opts", *opts))
    _wait_for_log(proc, log, r"epoch 2/3 iter 3/8")
    workers = _worker_pids(proc.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    text = log.read_text()
    assert re.search(r"resumed \(torchrun restart 1\) from \S+checkpoint_latest\.pyth: continuing at epoch 2/3, "
                     r"iteration \d", text)
    assert "DDP check: parameters identical on all 2 ranks" in text
    assert [r["epoch"] for r in _stats(out, "train_epoch")] == [1, 2, 3]
    assert [(r["epoch"], r["iter"]) for r in _stats(out, "train_iter")] == [(e, i) for e in (1, 2, 3)
                                                                             for i in range(1, 9)]


NODE_OPTS = ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "1", "NUM_GPUS", "0"]


@pytest.fixture(scope="module")
def one_node_of_four(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_node") / "run"
    single = subprocess.run(_torchrun("--standalone", "--nproc_per_node", "4", "tools/run_net.py", "--cfg", CFG,
                                      "--opts", *tiny_opts(tiny_data, out, *NODE_OPTS)),
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["node_rank", "c10d"])
def test_two_torchrun_nodes_on_localhost_equal_one_node_of_four(tiny_data, one_node_of_four, tmp_path, rendezvous):
    """The documented two-machine commands with HOST0 = 127.0.0.1 and 2 processes per node, against
    4 processes on one node: same final weights, same test scores, every test video once."""
    two = tmp_path / "two"
    port = str(29400 + (os.getpid() + len(rendezvous)) % 500)
    nodes = []
    for rank in (0, 1):
        if rendezvous == "node_rank":
            how = ["--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", port]
        else:
            how = ["--rdzv_id", "two_nodes", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}"]
        nodes.append(_start(_torchrun("--nnodes", "2", "--nproc_per_node", "2", *how, "tools/run_net.py",
                                      "--cfg", CFG, "--opts", *tiny_opts(tiny_data, two, *NODE_OPTS))))
    for node in nodes:
        stdout, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stdout[-3000:] + stderr[-3000:]

    log = (two / "log.txt").read_text()
    assert "4 process(es)" in log and "DDP check: parameters identical on all 4 ranks" in log
    name = "checkpoint_epoch_00001.pyth"
    _assert_same_weights(_weights(two / "checkpoints" / name), _weights(one_node_of_four / "checkpoints" / name))
    a, b = np.load(one_node_of_four / "predictions.npz"), np.load(two / "predictions.npz")
    assert a["index"].tolist() == b["index"].tolist() == list(range(NUM_VIDEOS_TEST))
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    assert json.loads((two / "test_metrics.json").read_text())["videos_evaluated"] == NUM_VIDEOS_TEST


# --------------------------------------------------------------------------- housekeeping
@pytest.mark.slow
def test_keep_last_two_and_best(tiny_data, tmp_path):
    out = tmp_path / "kept"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "4",
                                                       "TRAIN.CHECKPOINT_KEEP_LAST", "2", "TEST.ENABLE", "False")]) == 0
    folder = out / "checkpoints"
    assert sorted(os.listdir(folder)) == [cu.BEST, "checkpoint_epoch_00003.pyth", "checkpoint_epoch_00004.pyth"]
    val = _stats(out, "val_epoch")
    best_epoch = max(val, key=lambda r: (r["top1"], -r["epoch"]))["epoch"]  # the first epoch with the best top-1
    best = cu.read_checkpoint(str(folder / cu.BEST))
    assert best["epoch"] + 1 == best_epoch
    assert cu.progress_of(best).best_top1 == pytest.approx(max(r["top1"] for r in val))
    # A run resumed from what is left carries on from the newest epoch.
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "5",
                                                       "TRAIN.CHECKPOINT_KEEP_LAST", "2", "TEST.ENABLE", "False")]) == 0
    assert "continuing at epoch 5/5" in (out / "log.txt").read_text()
    assert {"checkpoint_epoch_00004.pyth", "checkpoint_epoch_00005.pyth"} <= set(os.listdir(folder))
    assert "checkpoint_epoch_00003.pyth" not in os.listdir(folder)


def test_find_last_valid_prefers_the_checkpoint_that_resumes_furthest(tmp_path):
    from video_gc.config import load_config
    from video_gc.models import build_model

    cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", "2", "MODEL.NUM_CLASSES", "3"])
    model, out = build_model(cfg), str(tmp_path)
    cu.save_checkpoint(out, 1, model, cfg=cfg)  # epoch 2 done: resumes at (2, 0)
    latest = cu.save_checkpoint(out, 2, model, cfg=cfg, progress=cu.Progress(epoch=2, iteration=5))
    assert cu.find_last_valid_checkpoint(out)[0] == latest  # (2, 5) is further along
    newer = cu.save_checkpoint(out, 2, model, cfg=cfg)  # epoch 3 done: (3, 0)
    assert cu.find_last_valid_checkpoint(out)[0] == newer
    with open(newer, "wb") as f:
        f.write(b"truncated")
    assert cu.find_last_valid_checkpoint(out)[0] == latest  # an unreadable newer one is skipped
    # Housekeeping after an epoch checkpoint removes the latest it supersedes, never the newest epoch.
    assert cu.prune_checkpoints(out, keep_last=1, superseded_latest=True) == ["checkpoint_epoch_00002.pyth",
                                                                               cu.LATEST]
    assert os.listdir(cu.checkpoint_dir(out)) == ["checkpoint_epoch_00003.pyth"]


# --------------------------------------------------------------------------- a chosen checkpoint
@pytest.mark.slow
def test_checkpoint_file_path_resumes_epoch_and_optimizer_unless_reset_or_another_head(tiny_data, tmp_path):
    source = tmp_path / "source"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, source, "TEST.ENABLE", "False")]) == 0
    path = str(source / "checkpoints" / "checkpoint_epoch_00002.pyth")

    resumed = tmp_path / "resumed"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, resumed, "SOLVER.MAX_EPOCH", "3",
                                                       "TRAIN.CHECKPOINT_FILE_PATH", path, "TEST.ENABLE",
                                                       "False")]) == 0
    log = (resumed / "log.txt").read_text()
    assert "its epoch and optimizer resume" in log and "continuing at epoch 3/3" in log
    assert [r["epoch"] for r in _stats(resumed, "train_epoch")] == [3]
    assert sorted(os.listdir(resumed / "checkpoints")) == [cu.BEST, "checkpoint_epoch_00003.pyth"]

    reset = tmp_path / "reset"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, reset, "SOLVER.MAX_EPOCH", "1",
                                                       "TRAIN.CHECKPOINT_FILE_PATH", path,
                                                       "TRAIN.CHECKPOINT_EPOCH_RESET", "True",
                                                       "TEST.ENABLE", "False")]) == 0
    assert "fresh run from epoch 1: initial weights from" in (reset / "log.txt").read_text()
    assert [r["epoch"] for r in _stats(reset, "train_epoch")] == [1]

    other = tmp_path / "other_head"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, other, "SOLVER.MAX_EPOCH", "1",
                                                       "MODEL.NUM_CLASSES", "5", "TRAIN.CHECKPOINT_FILE_PATH",
                                                       path, "TEST.ENABLE", "False")]) == 0
    assert "fresh run from epoch 1: initial weights from" in (other / "log.txt").read_text()


# --------------------------------------------------------------------------- SLURM
SBATCH = os.path.join(REPO, "docs", "slurm", "run_net.sbatch")
# The sbatch options the script may use (sbatch's long options; no SLURM here to ask).
SBATCH_OPTIONS = {"job-name", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time", "signal",
                  "requeue", "open-mode", "output", "partition", "account", "mem"}


def _srun_command():
    """The srun line of the script, continuation lines joined, split into words."""
    text = open(SBATCH).read().replace("\\\n", " ")
    return next(line for line in text.splitlines() if line.startswith("srun ")).split()


def test_slurm_script_syntax_and_its_commands_parse():
    assert subprocess.run(["bash", "-n", SBATCH], capture_output=True).returncode == 0
    options = [line.split()[1] for line in open(SBATCH) if line.startswith("#SBATCH")]
    assert {option[2:].split("=")[0] for option in options} <= SBATCH_OPTIONS
    assert "--signal=B:USR1@180" in options and "--requeue" in options

    from torch.distributed.run import get_args_parser

    from video_gc.config import load_config
    from video_gc.engine.launch import parse_args

    words = _srun_command()
    assert words[:3] == ["srun", "--kill-on-bad-exit=1", "torchrun"] and words[-1] == "&"
    env = {"$SLURM_NNODES": "2", "$SLURM_JOB_ID": "42", "$HEAD_NODE:29500": "node1:29500",
           "$CFG": "configs/kinetics/SLOW_8x8_R50_GC.yaml"}
    argv = [env.get(word.strip('"'), word.strip('"')) for word in words[3:-1]]
    args = get_args_parser().parse_args(argv)
    assert (args.nnodes, args.nproc_per_node, args.max_restarts) == ("2", "8", 3)
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == ("c10d", "node1:29500", "42")
    assert args.training_script == "tools/run_net.py"
    run_args = parse_args(args.training_script_args)
    load_config(os.path.join(REPO, run_args.cfg_file), run_args.opts)


def _slurm_stand_ins(folder, record):
    """srun runs a stand-in training task (a step, then status 75 on SIGTERM, as run_net does) and
    waits for it; scancel --signal sends the signal to that task; scontrol lists two nodes."""
    folder.mkdir()
    scripts = {
        "srun": f'echo "srun $*" >> {record}\n'
                f'bash -c \'trap "echo task got SIGTERM >> {record}; exit 75" TERM; '
                f'while true; do sleep 0.05; done\' &\n'
                f'echo $! > {folder}/task.pid\nwait $!\nexit $?\n',
        "scancel": f'echo "scancel $*" >> {record}\nkill -s "${{1#--signal=}}" "$(cat {folder}/task.pid)"\n',
        "scontrol": f'if [ "$1" = show ]; then printf "node7\\nnode8\\n"; else echo "scontrol $*" >> {record}; fi\n',
    }
    for name, body in scripts.items():
        (folder / name).write_text("#!/bin/bash\n" + body)
        os.chmod(folder / name, 0o755)


def test_slurm_script_stops_training_and_requeues_on_usr1(tmp_path):
    shims, record = tmp_path / "bin", tmp_path / "record.txt"
    _slurm_stand_ins(shims, record)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}", SLURM_JOB_ID="42", SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[7-8]")
    script = subprocess.Popen(["bash", SBATCH], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (shims / "task.pid").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the task sets its trap
    script.send_signal(signal.SIGUSR1)
    stdout, _ = script.communicate(timeout=30)
    assert script.returncode == 0
    lines = record.read_text().splitlines()
    assert lines[0].startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 2 ") and "node7:29500" in lines[0]
    assert lines[1:] == ["scancel --signal=TERM 42.0", "task got SIGTERM", "scontrol requeue 42"]
    assert "USR1: stopping training at a checkpoint, then requeueing job 42" in stdout


def test_a_mid_epoch_checkpoint_resumed_with_another_batch_size_is_refused(tiny_data, tmp_path, capsys):
    """Its iteration counts global batches of the size it was written with: another TRAIN.BATCH_SIZE
    would start at other videos of the epoch."""
    from video_gc.config import load_config
    from video_gc.engine.optimizer import construct_optimizer
    from video_gc.models import build_model

    out = tmp_path / "run"
    cfg = load_config(CFG, tiny_opts(tiny_data, out))
    model = build_model(cfg)
    cu.save_checkpoint(str(out), 1, model, construct_optimizer(model, cfg), None, cfg,
                       progress=cu.Progress(epoch=1, iteration=2, global_batch=4))
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "TRAIN.BATCH_SIZE", "2")]) == 1
    log = (out / "log.txt").read_text()
    assert ("the checkpoint stopped part-way through epoch 2 with TRAIN.BATCH_SIZE 4, and its iteration 2 means "
            "other videos with TRAIN.BATCH_SIZE 2: resume with TRAIN.BATCH_SIZE 4") in log
    assert not (out / "checkpoints" / "checkpoint_epoch_00002.pyth").exists()


def test_resuming_with_other_training_settings_says_which(tiny_data, tmp_path):
    """The run goes on with the new values (extending MAX_EPOCH is common), but the log names each change."""
    out = tmp_path / "run"
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "SOLVER.MAX_EPOCH", "1", "TEST.ENABLE",
                                                       "False")]) == 0
    mixup = ("MIXUP.ENABLE", "True", "MODEL.LOSS_FUNC", "soft_cross_entropy")
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "TEST.ENABLE", "False", *mixup,
                                                       "DATA.TRAIN_JITTER_SCALES", "[32, 40]")]) == 0
    log = (out / "log.txt").read_text()
    line = next(x for x in log.splitlines() if "with other training settings than its run's" in x)
    assert ("DATA.TRAIN_JITTER_SCALES [32, 36] -> [32, 40]" in line and "MIXUP.ENABLE False -> True" in line
            and "MODEL.LOSS_FUNC 'cross_entropy' -> 'soft_cross_entropy'" in line and "SOLVER.MAX_EPOCH 1 -> 2" in line
            and line.count(" -> ") == 4), line
    # Workers, paths and the like are not the recipe: only the new change is named.
    assert run_net(["--cfg", CFG, "--opts", *tiny_opts(tiny_data, out, "TEST.ENABLE", "False", *mixup,
                                                       "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "SOLVER.MAX_EPOCH",
                                                       "3", "DATA_LOADER.NUM_WORKERS", "1")]) == 0
    last = [x for x in (out / "log.txt").read_text()[len(log):].splitlines() if "other training settings" in x]
    assert len(last) == 1 and last[0].endswith("SOLVER.MAX_EPOCH 2 -> 3. Training goes on with the new ones"), last
