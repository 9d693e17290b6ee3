"""Entry point of tools/run_net.py: arguments, config, processes, then train and/or test.

Three ways to run:

- one process: ``python tools/run_net.py --cfg FILE`` with ``NUM_GPUS`` 0 or 1;
- torchrun (one or several nodes): ``torchrun --nproc_per_node 8 [--nnodes 2
  --rdzv_endpoint HOST:PORT ...] tools/run_net.py --cfg FILE``; the process
  count comes from torchrun and ``NUM_GPUS`` only chooses GPUs (> 0) or CPU (0);
- PySlowFast style: ``NUM_GPUS`` > 1 without torchrun spawns ``NUM_GPUS``
  processes on this machine (``--num_shards``/``--shard_id``/``--init_method``
  for several machines). On the CPU (``NUM_GPUS`` 0, or no CUDA device) the
  count is ``NUM_CPU_PROCESSES`` (default 1), whatever ``NUM_GPUS`` says.

Rank 0 holds ``OUTPUT_DIR/run.lock`` for the whole job, so two runs never share a folder.
SIGTERM, SIGUSR1 and SIGINT stop a run cleanly (video_gc.engine.signals): during training at a
checkpoint, exit status 75, resumed by the same command; elsewhere at once, 128 + the signal's
number. Either way one log line, the DataLoader workers and spawned processes stopped, the lock
released. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

import torch

from video_gc.config import ConfigError, load_config
from video_gc.config.compat import report_unused
from video_gc.utils.io import CheckpointError, LockedError, acquire_lock, release_lock, remove_stale_temp_files

from . import distributed as du
from .common import checkpoint_config_for_run
from .logger import get_logger, save_run_config, setup_logging
from .signals import EXIT_PREEMPTED, Interrupted, Preempted, StopSignals

LOCK_FILE = "run.lock"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and test video_gc models.")
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="path to a YAML config")
    parser.add_argument("--init_method", default=None,
                        help="process-group rendezvous for spawned processes, e.g. tcp://HOST:PORT "
                             "(default: INIT_METHOD from the config); ignored under torchrun")
    parser.add_argument("--num_shards", type=int, default=None, help="number of machines (PySlowFast style)")
    parser.add_argument("--shard_id", type=int, default=None, help="index of this machine, 0-based")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return parser.parse_args(argv)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story: printed without a traceback."""
    from video_gc.data.lists import DataListError

    from .common import EngineError
    from .train import NonFiniteLossError

    return (ConfigError, CheckpointError, DataListError, EngineError, LockedError, NonFiniteLossError)


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------
def _run_stoppable(body) -> int:
    """``body()``'s exit status; after a stop signal, one log line and EXIT_PREEMPTED when training
    stopped at a checkpoint, else 128 + the signal's number."""
    with StopSignals() as stop:
        try:
            return body()
        except Preempted as preempted:
            get_logger().warning("stopped by %s at a checkpoint; run the same command again to resume "
                                 "(exit status %d)", signal.Signals(preempted.args[0]).name, EXIT_PREEMPTED)
            return EXIT_PREEMPTED
        except BaseException:
            if stop.received is None:
                raise
            # Whatever surfaced while stopping (e.g. a DataLoader worker the same Ctrl-C stopped first)
            # is part of the stop, not a second error.
            get_logger().warning("interrupted by %s; stopping", signal.Signals(stop.received).name)
            return 128 + stop.received


def _stop_children(processes, signum: int) -> int:
    """Ask the spawned processes to stop (SIGTERM: those training stop at a checkpoint) and wait,
    so that none outlives this one; EXIT_PREEMPTED when all of them stopped at a checkpoint."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join()
    codes = {process.exitcode for process in processes}
    return EXIT_PREEMPTED if codes == {EXIT_PREEMPTED} else 128 + signum


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------
@contextlib.contextmanager
def _hold_output_dir(cfg, dist_info: du.DistInfo):
    """Rank 0 holds OUTPUT_DIR's lock file for the whole job (released on an error or a signal
    too); when another run holds it, every rank stops. Yields the description of a stale lock
    that was taken over, else None."""
    path = os.path.join(cfg.OUTPUT_DIR, LOCK_FILE)
    taken_over = du.run_on_master(lambda: acquire_lock(path), (LockedError,))
    try:
        yield taken_over
    finally:
        if dist_info.is_master:
            release_lock(path)


def _tidy_output_dir(cfg, taken_over: str | None) -> None:
    """Rank 0, holding the lock: say whose stale lock it took over, and delete the temporary
    files that a run killed during a checkpoint save left behind."""
    from .checkpoint import checkpoint_dir

    logger = get_logger()
    if taken_over:
        logger.warning("took over %s, left by %s", os.path.join(cfg.OUTPUT_DIR, LOCK_FILE), taken_over)
    removed = remove_stale_temp_files(checkpoint_dir(cfg.OUTPUT_DIR))
    if removed:
        logger.warning("removed %d temporary file(s) of an interrupted checkpoint save: %s", len(removed),
                       ", ".join(removed))


def _cpu_note(cfg) -> str | None:
    """What to say when NUM_GPUS asks for GPUs this machine does not have (torchrun sets its own count)."""
    if cfg.NUM_GPUS <= 1 or du.use_cuda(cfg) or du.launched_by_torchrun():
        return None
    procs = du.processes_per_machine(cfg)
    return (f"NUM_GPUS is {cfg.NUM_GPUS} but no CUDA device is visible: running on the CPU with {procs} "
            f"process(es) (NUM_CPU_PROCESSES {cfg.NUM_CPU_PROCESSES}; set it above 1 for more gloo processes)")


def run_job(cfg, dist_info: du.DistInfo) -> dict:
    """Train (TRAIN.ENABLE) then test (TEST.ENABLE) in this process; returns what they reported."""
    from .test import test
    from .train import train

    setup_logging(None, dist_info.is_master)  # the console only, until this run holds OUTPUT_DIR
    with _hold_output_dir(cfg, dist_info) as taken_over:
        setup_logging(cfg.OUTPUT_DIR, dist_info.is_master)
        logger = get_logger()
        if dist_info.is_master:
            _tidy_output_dir(cfg, taken_over)
            if not cfg.TRAIN.ENABLE:  # training writes it once it knows it may use the folder
                save_run_config(cfg)
            report_unused(cfg, logger)  # rank 0 only: once per process group
            if note := _cpu_note(cfg):
                logger.warning("%s", note)
        logger.info("output dir %s; %d process(es) on %s", cfg.OUTPUT_DIR, dist_info.world_size,
                    dist_info.device.type)
        out = {}
        if cfg.TRAIN.ENABLE:
            out["train"] = train(cfg, dist_info)
        if cfg.TEST.ENABLE:
            out["test"] = test(cfg, dist_info, trained=out.get("train", {}).get("last_checkpoint"))
        return out


def _run_guarded(cfg, dist_info: du.DistInfo) -> int:
    """run_job with user errors turned into one log line and exit status 1."""
    try:
        run_job(cfg, dist_info)
        return 0
    except user_errors() as err:
        get_logger().error("%s", err)
        return 1
    finally:
        du.destroy_process_group()


def _spawned_worker(local_rank: int, cfg, init_method: str, procs_per_node: int) -> None:
    """Body of each process started by torch.multiprocessing.spawn."""
    if not du.use_cuda(cfg):
        # Share the machine's cores instead of every process using all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_node))
    rank = cfg.SHARD_ID * procs_per_node + local_rank
    code = _run_stoppable(lambda: _run_guarded(cfg, du.init_process_group(
        cfg, rank=rank, world_size=procs_per_node * cfg.NUM_SHARDS, local_rank=local_rank, init_method=init_method)))
    if code:
        sys.exit(code)


def check_data_lists(cfg) -> None:
    """Read the lists the job will use before any process starts or any epoch runs, so a
    missing or malformed list is one clear error, not one per process (or one after training)."""
    from video_gc.data.lists import read_video_list

    splits = (["train"] if cfg.TRAIN.ENABLE else []) + (["test"] if cfg.TEST.ENABLE else [])
    for split in splits:
        read_video_list(os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{split}.csv"),
                        separator=cfg.DATA.PATH_LABEL_SEPARATOR, prefix=cfg.DATA.PATH_PREFIX,
                        num_classes=cfg.MODEL.NUM_CLASSES)


def check_run_keys(cfg) -> None:
    """Keys of this run that no section check covers; one clear error before any process starts."""
    if not 0.0 <= cfg.TEST.MIN_COVERAGE <= 1.0:
        raise ConfigError(f"config key TEST.MIN_COVERAGE: invalid value {cfg.TEST.MIN_COVERAGE!r}; allowed values: "
                          f"a fraction from 0 to 1")


def prepare_output_dir(path: str) -> None:
    """Create OUTPUT_DIR before any process starts; a path that cannot be a folder is one error."""
    from .common import EngineError

    if os.path.exists(path) and not os.path.isdir(path):
        raise EngineError(f"OUTPUT_DIR {path} is a file, not a folder; choose another OUTPUT_DIR")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise EngineError(f"cannot create OUTPUT_DIR {path}: {err.strerror}") from err


def launch(cfg, init_method: str | None = None) -> int:
    """Run the job in this process, under torchrun, or in spawned processes (one per GPU, or
    NUM_CPU_PROCESSES on the CPU)."""
    check_run_keys(cfg)
    check_data_lists(cfg)
    prepare_output_dir(cfg.OUTPUT_DIR)
    if du.launched_by_torchrun():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        world = int(os.environ["WORLD_SIZE"])
        cfg.NUM_SHARDS = max(world // max(local_world, 1), 1)
        cfg.SHARD_ID = int(os.environ.get("GROUP_RANK", 0))
        info = du.init_process_group(cfg, rank=int(os.environ["RANK"]), world_size=world,
                                     local_rank=int(os.environ["LOCAL_RANK"]), init_method="env://")
        return _run_guarded(cfg, info)

    procs = du.processes_per_machine(cfg)
    if du.use_cuda(cfg) and procs > torch.cuda.device_count():
        raise ConfigError(f"config key NUM_GPUS: {cfg.NUM_GPUS} processes requested but only "
                          f"{torch.cuda.device_count()} CUDA devices are visible")
    if procs * cfg.NUM_SHARDS == 1:
        return _run_guarded(cfg, du.init_process_group(cfg, rank=0, world_size=1, local_rank=0, init_method=""))

    import torch.multiprocessing as mp

    context = mp.spawn(_spawned_worker, args=(cfg, init_method or cfg.INIT_METHOD, procs), nprocs=procs, join=False)
    if StopSignals.active is not None:  # a second Ctrl-C takes them down with this process
        StopSignals.active.children = [process.pid for process in context.processes]
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as err:
        if err.exit_code == EXIT_PREEMPTED:  # a stop signal reached a worker, not this process
            return _stop_children(context.processes, signal.SIGTERM)
        print(f"error: a worker process exited with status {err.exit_code}; see the log above", file=sys.stderr)
        return 1
    except Interrupted as stop:
        code = _stop_children(context.processes, stop.args[0])
        if code == EXIT_PREEMPTED:
            get_logger().warning("stopped by %s at a checkpoint; run the same command again to resume (exit "
                                 "status %d)", signal.Signals(stop.args[0]).name, EXIT_PREEMPTED)
            return code
        raise
    return 0


def main(argv=None) -> int:
    """tools/run_net.py: 0 done, 1 a run error, 2 a config or data-list error, 75 stopped by a signal at a
    checkpoint (rerun to resume), 128 + N stopped by signal N elsewhere (130 SIGINT, 143 SIGTERM)."""
    return _run_stoppable(lambda: _main(argv))


def _main(argv) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.cfg_file, args.opts)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.num_shards is not None:
        cfg.NUM_SHARDS = args.num_shards
    if args.shard_id is not None:
        cfg.SHARD_ID = args.shard_id
    if not 0 <= cfg.SHARD_ID < cfg.NUM_SHARDS:
        print(f"error: --shard_id {cfg.SHARD_ID} must be in [0, --num_shards {cfg.NUM_SHARDS})", file=sys.stderr)
        return 2
    from video_gc.data.lists import DataListError

    from .common import EngineError

    try:
        return launch(checkpoint_config_for_run(cfg, args.opts), args.init_method)
    except (ConfigError, DataListError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except EngineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
