"""Process-group helpers. Everything degrades to a no-op in a single process.

How ``NUM_GPUS`` is read: on a machine with CUDA it is the number of GPUs (one
process each) per node. A run on the CPU (``NUM_GPUS: 0``, or no CUDA device
visible) has ``NUM_CPU_PROCESSES`` processes per node (gloo backend), one by
default: a GPU config on a laptop runs as one process instead of eight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.run) export these for every worker."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def use_cuda(cfg) -> bool:
    return cfg.NUM_GPUS > 0 and torch.cuda.is_available()


def processes_per_machine(cfg) -> int:
    """Processes to start on this machine without torchrun: one per GPU, or NUM_CPU_PROCESSES on the CPU."""
    return max(cfg.NUM_GPUS, 1) if use_cuda(cfg) else max(cfg.NUM_CPU_PROCESSES, 1)


def backend_for(cfg) -> str:
    """NCCL needs CUDA; on CPU the only choice is gloo."""
    return cfg.DIST_BACKEND if use_cuda(cfg) else "gloo"


def init_process_group(cfg, *, rank: int, world_size: int, local_rank: int, init_method: str) -> DistInfo:
    """Join the process group (when world_size > 1) and pick this process's device."""
    if use_cuda(cfg):
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        if init_method == "env://" and "TORCHELASTIC_RESTART_COUNT" in os.environ:
            kwargs["store"] = _restart_store(rank, world_size)
        else:
            kwargs["init_method"] = init_method
        dist.init_process_group(backend_for(cfg), rank=rank, world_size=world_size, **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _restart_store(rank: int, world_size: int) -> dist.Store:
    """torchrun's store, with keys of their own for each restart of the workers.

    The store outlives a restart, and with it the addresses the workers of the last
    attempt published: a restarted worker that read one would wait for a dead peer.
    """
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=rank == 0 and not agent_hosts_it)
    return dist.PrefixStore(f"video_gc/restart_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_master() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def _all_reduce(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks into a copy on the input's device; NCCL only reduces CUDA tensors,
    so CPU tallies (validation counts) make a round trip through this rank's GPU."""
    values = values.detach().clone()
    if is_dist():
        home = values.device
        if dist.get_backend() == "nccl" and home.type != "cuda":
            values = values.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(values)
        values = values.to(home)
    return values


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (a copy; the input is untouched)."""
    return _all_reduce(values) / get_world_size()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all ranks (a copy on the input's device)."""
    return _all_reduce(values)


def all_gather_objects(obj) -> list:
    """One entry per rank (a list with ``obj`` alone when not distributed)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_master(fn, errors: tuple[type[Exception], ...]):
    """``fn()`` on rank 0; every rank gets its result, or raises its error (one of ``errors``).

    A rank-0 failure (a refused OUTPUT_DIR, a full disk) then stops every rank at once,
    instead of leaving the others waiting for rank 0 in their next collective.
    """
    outcome = None
    if is_master():
        try:
            outcome = (True, fn())
        except errors as err:
            outcome = (False, err)
        except Exception as err:  # unexpected: still stop every rank, then re-raise it here with its traceback
            broadcast_object((False, RuntimeError(f"rank 0 failed: {type(err).__name__}: {err}")))
            raise
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def parameters_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes (not buffers: BN running stats are per rank by design)."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
