"""DataLoaders for train / val / test, seeded and DDP-aware.

    loader = construct_loader(cfg, "train")
    for epoch in range(start, end):
        shuffle_loader(loader, epoch)      # reshuffles and reseeds augmentation
        for batch in loader: ...
        loader.skipped_this_epoch          # bad videos replaced during the epoch

Batch sizes: ``TRAIN.BATCH_SIZE`` / ``TEST.BATCH_SIZE`` are global, split evenly
over the processes of the run (``torch.distributed`` world size). PySlowFast
divides by ``NUM_GPUS`` only (its batch size is per machine); with one machine
the two agree.

Determinism: the shuffle order comes from (RNG_SEED, epoch) and every item's
augmentation from (RNG_SEED, epoch, index), so the same seed gives the same
batches with any ``DATA_LOADER.NUM_WORKERS``, persistent workers or not.

With ``AUG.NUM_SAMPLE`` N > 1 a train batch of B items carries B * N clips.

Test under DDP: ``ShardedEvalSampler`` gives every video to exactly one rank
(no padding); the engine still de-duplicates gathered results by index
(``dedup_by_index``), which also makes ``pad=True`` safe.

Workers are forked (Linux default); decord and PyAV objects are only ever
created inside the worker that uses them, which the tests check with 2 workers.
"""

from __future__ import annotations

import logging
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, default_collate

from video_gc.config import ConfigError

from .dataset import VideoDataset
from .lists import DataListError
from .samplers import ShardedEvalSampler, TrainSampler

logger = logging.getLogger(__name__)


def build_dataset(cfg, split: str) -> VideoDataset:
    """The dataset of ``split`` ("train", "val" or "test")."""
    return VideoDataset(cfg, split)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def per_process_batch_size(global_batch: int, world_size: int, key: str) -> int:
    """Split a global batch over ``world_size`` processes; it must divide evenly."""
    if global_batch < world_size or global_batch % world_size:
        raise ConfigError(f"{key}={global_batch} must be a multiple of the number of processes ({world_size})")
    return global_batch // world_size


class VideoCollate:
    """Stack items into the contract's batch dict; failed val/test items go to ``"failed"``.

    With ``num_samples`` N > 1 (AUG.NUM_SAMPLE) a train item holds N clips [N, 3, T, S, S];
    they become N rows of the batch, each with the item's label and index.
    """

    def __init__(self, split: str, input_shape: tuple[int, ...], num_samples: int = 1):
        self.split, self.input_shape, self.num_samples = split, input_shape, num_samples

    def __call__(self, items: list[dict]) -> dict:
        good = [item for item in items if item["inputs"] is not None]
        if good:
            # default_collate stacks straight into shared memory inside a worker (no extra copy).
            inputs = [item["inputs"] for item in good]
            if inputs[0].dtype == torch.uint8 and inputs[0].movedim(-4, -1).is_contiguous():
                # uint8 train clips over channels-last pixels (VideoDataset) keep that layout.
                inputs = default_collate([clip.movedim(-4, -1) for clip in inputs]).movedim(-1, -4)
            else:
                inputs = default_collate(inputs)
        else:
            inputs = torch.empty((0,) + tuple(self.input_shape))
        if self.num_samples > 1:
            inputs = inputs.flatten(0, 1)  # a view: the N clips of an item are adjacent rows
        repeat = range(self.num_samples)
        batch = {
            "inputs": inputs,
            "labels": torch.tensor([item["label"] for item in good for _ in repeat], dtype=torch.long),
            "indices": torch.tensor([item["index"] for item in good for _ in repeat], dtype=torch.long),
        }
        if self.split in ("train", "val"):
            batch["skipped"] = [path for item in items for path in item.get("skipped", ())]
        if self.split in ("val", "test"):
            batch["failed"] = [item["failed"] for item in items if item["failed"] is not None]
        return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy / random in each worker from torch's per-worker seed; one thread per worker.

    A worker ignores the stop signals (SIGINT, SIGTERM, SIGUSR1): schedulers and launchers send
    them to the whole process group, and a worker killed by one would fail the step the main
    process is finishing before it stops. The main process ends its workers; a worker whose main
    process died exits on its own.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


class VideoLoader(DataLoader):
    """A DataLoader that logs each bad video once and keeps per-epoch counts.

    ``skipped_this_epoch`` (train/val) lists the paths replaced by another draw
    during the last pass; ``failed_this_epoch`` (val/test) the (index, path,
    reason) entries of videos that could not be decoded. Logging happens here,
    in the main process, not in the workers.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_this_epoch: list[str] = []
        self.failed_this_epoch: list[tuple[int, str, str]] = []
        self._logged: set[str] = set()

    def __iter__(self):
        self.skipped_this_epoch, self.failed_this_epoch = [], []
        for batch in super().__iter__():
            for path in batch.get("skipped", ()):
                self.skipped_this_epoch.append(path)
                self._log_once(path, "bad video replaced by another draw")
            for index, path, reason in batch.get("failed", ()):
                self.failed_this_epoch.append((index, path, reason))
                self._log_once(path, f"bad video recorded as failed: {reason}")
            yield batch
        if self.skipped_this_epoch:
            logger.warning("%d bad training videos were replaced this epoch (%d distinct)",
                           len(self.skipped_this_epoch), len(set(self.skipped_this_epoch)))

    def _log_once(self, path: str, what: str) -> None:
        if path not in self._logged:
            self._logged.add(path)
            logger.warning("%s: %s", what, path)


def normalizes_on_device(cfg, device: torch.device) -> bool:
    """Whether train batches cross over as uint8 for ``device`` to normalise (DATA.NORMALIZE_ON_DEVICE)."""
    mode = cfg.DATA.NORMALIZE_ON_DEVICE
    return mode == "always" or (mode == "auto" and device.type == "cuda")


def construct_loader(cfg, split: str, *, pad_eval: bool = False, uint8_clips: bool = False) -> VideoLoader:
    """DataLoader for ``split``; under torch.distributed each rank gets its shard. With
    ``uint8_clips`` a train batch's inputs stay uint8 (see :func:`normalizes_on_device`)."""
    dataset = build_dataset(cfg, split)
    dataset.uint8_clips = uint8_clips and split == "train"
    world_size, rank = _world()
    if split == "train":
        batch_size = per_process_batch_size(cfg.TRAIN.BATCH_SIZE, world_size, "TRAIN.BATCH_SIZE")
        sampler = TrainSampler(len(dataset), batch_size=batch_size, num_replicas=world_size, rank=rank,
                               seed=int(cfg.RNG_SEED))
        drop_last = True
    else:
        batch_size = per_process_batch_size(cfg.TEST.BATCH_SIZE, world_size, "TEST.BATCH_SIZE")
        sampler = ShardedEvalSampler(len(dataset), num_replicas=world_size, rank=rank, pad=pad_eval)
        drop_last = False
    if drop_last and len(sampler) < batch_size:
        raise DataListError(f"the train list has {len(dataset)} videos, {len(sampler)} for this process: "
                            f"fewer than one batch of {batch_size} (TRAIN.BATCH_SIZE / processes), "
                            f"so an epoch would be empty")
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    generator = torch.Generator().manual_seed(int(cfg.RNG_SEED))
    return VideoLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=VideoCollate(split, dataset.input_shape, dataset.num_samples),
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
        # Safe across epochs: the dataset keeps its epoch in shared memory (VideoDataset.set_epoch).
        persistent_workers=bool(cfg.DATA_LOADER.PERSISTENT_WORKERS) and workers > 0,
        prefetch_factor=int(cfg.DATA_LOADER.PREFETCH_FACTOR) if workers > 0 else None,
    )


def shuffle_loader(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    """Reshuffle and reseed augmentation for ``epoch``; a train loader then starts at its
    global batch ``start_batch`` (a run resumed mid-epoch)."""
    if isinstance(loader.sampler, TrainSampler):
        loader.sampler.set_epoch(epoch, start_batch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(int(getattr(loader.dataset, "seed", 0)) * 1000 + int(epoch))
