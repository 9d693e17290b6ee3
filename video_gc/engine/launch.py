"""Entry point of tools/run_net.py: arguments, config, processes, then train and/or test.

Three ways to run:

- one process: ``python tools/run_net.py --cfg FILE`` with ``NUM_GPUS`` 0 or 1;
- torchrun (one or several nodes): ``torchrun --nproc_per_node 8 [--nnodes 2
  --rdzv_endpoint HOST:PORT ...] tools/run_net.py --cfg FILE``; the process
  count comes from torchrun and ``NUM_GPUS`` only chooses GPUs (> 0) or CPU (0);
- PySlowFast style: ``NUM_GPUS`` > 1 without torchrun spawns ``NUM_GPUS``
  processes on this machine (``--num_shards``/``--shard_id``/``--init_method``
  for several machines). On a machine without CUDA, ``NUM_GPUS`` is the number
  of CPU processes (gloo).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from video_gc.config import ConfigError, load_config
from video_gc.config.compat import report_unused

from . import distributed as du
from .logger import get_logger, setup_logging


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
    from video_gc.utils.io import CheckpointError

    from .common import EngineError
    from .train import NonFiniteLossError

    return (ConfigError, CheckpointError, DataListError, EngineError, NonFiniteLossError)


def run_job(cfg, dist_info: du.DistInfo) -> dict:
    """Train (TRAIN.ENABLE) then test (TEST.ENABLE) in this process; returns what they reported."""
    from .test import test
    from .train import train

    setup_logging(cfg.OUTPUT_DIR, dist_info.is_master)
    logger = get_logger()
    if dist_info.is_master:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        report_unused(cfg, logger)  # rank 0 only: once per process group
    logger.info("output dir %s; %d process(es) on %s", cfg.OUTPUT_DIR, dist_info.world_size, dist_info.device.type)
    out = {}
    if cfg.TRAIN.ENABLE:
        out["train"] = train(cfg, dist_info)
    if cfg.TEST.ENABLE:
        out["test"] = test(cfg, dist_info)
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
    info = du.init_process_group(cfg, rank=rank, world_size=procs_per_node * cfg.NUM_SHARDS,
                                 local_rank=local_rank, init_method=init_method)
    code = _run_guarded(cfg, info)
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


def launch(cfg, init_method: str | None = None) -> int:
    """Run the job in this process, under torchrun, or in NUM_GPUS spawned processes."""
    check_data_lists(cfg)
    if du.launched_by_torchrun():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        world = int(os.environ["WORLD_SIZE"])
        cfg.NUM_SHARDS = max(world // max(local_world, 1), 1)
        cfg.SHARD_ID = int(os.environ.get("GROUP_RANK", 0))
        info = du.init_process_group(cfg, rank=int(os.environ["RANK"]), world_size=world,
                                     local_rank=int(os.environ["LOCAL_RANK"]), init_method="env://")
        return _run_guarded(cfg, info)

    procs = max(cfg.NUM_GPUS, 1)
    if du.use_cuda(cfg) and procs > torch.cuda.device_count():
        raise ConfigError(f"config key NUM_GPUS: {cfg.NUM_GPUS} processes requested but only "
                          f"{torch.cuda.device_count()} CUDA devices are visible")
    if procs * cfg.NUM_SHARDS == 1:
        return _run_guarded(cfg, du.init_process_group(cfg, rank=0, world_size=1, local_rank=0, init_method=""))

    import torch.multiprocessing as mp

    try:
        mp.spawn(_spawned_worker, args=(cfg, init_method or cfg.INIT_METHOD, procs), nprocs=procs, join=True)
    except mp.ProcessExitedException as err:
        print(f"error: a worker process exited with status {err.exit_code}; see the log above", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
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

    try:
        return launch(cfg, args.init_method)
    except (ConfigError, DataListError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
