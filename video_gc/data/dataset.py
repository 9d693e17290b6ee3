"""Kinetics-style video dataset: CSV list -> decoded, sampled, augmented clips.

One class serves the three splits (PySlowFast semantics):

- ``train``: one clip at a random position (its target fps raised by up to
  ``TRAIN_JITTER_FPS``), random short-side jitter (or the relative-area
  crop), random crop, flip. With ``AUG.NUM_SAMPLE`` N > 1 the item holds N
  such clips of its video, each with its own position and augmentation,
  decoded in one pass: ``inputs`` is [N, 3, T, S, S] and the collate function
  makes them N samples of the batch. A bad video (missing, empty,
  truncated, undecodable) is replaced by another draw; the item lists the
  replaced paths under ``"skipped"``.
- ``val``: one deterministic view: the centre clip, short side
  ``TEST_CROP_SIZE``, centre crop ``TEST_CROP_SIZE``.
- ``test``: one item = one video with all ``NUM_ENSEMBLE_VIEWS x
  NUM_SPATIAL_CROPS`` views, clip-major, the clips placed as
  ``USE_OFFSET_SAMPLING`` says (video_gc.data.sampling). The video is opened
  once, the union of the clips' frames decoded once and resized once, then cut
  into views ("decode once"; PySlowFast re-opens and re-decodes it for every view).

With ``DECODING_SHORT_SIZE`` > 0, every split first resizes the decoded frames
to that short side, then applies the above. ``DATA.FORMAT frames`` reads the
list's frame-store files instead of videos (video_gc.data.decoder); the rest is
the same.

In val/test a bad video is not replaced: the item carries ``failed = (index,
path, reason)`` and no tensor, so the collate function drops it from the batch
and reports it. Randomness comes from a generator seeded by (RNG_SEED, epoch,
index, attempt), so the clips depend on the seed, never on the worker layout.
The epoch lives in shared memory, so ``set_epoch`` in the main process reaches
loader workers that persist across epochs.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from . import transforms as T
from .decoder import describe_error, open_video, reader_for
from .lists import DataListError, read_video_list
from .sampling import eval_clip_indices, train_clip_indices

SPLITS = ("train", "val", "test")
# A train item gives up after this many bad draws in a row (an all-bad list).
MAX_REPLACEMENTS = 100


def item_generator(seed: int, epoch: int, index: int, attempt: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, index, attempt)."""
    state = np.random.SeedSequence([seed, epoch, index, attempt]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class VideoDataset(Dataset):
    """Videos of one split; see the module docstring for what an item holds."""

    def __init__(self, cfg, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}', choose from {SPLITS}")
        self.split = split
        data = cfg.DATA
        list_path = os.path.join(data.PATH_TO_DATA_DIR, f"{split}.csv")
        self.paths, self.labels = read_video_list(
            list_path, separator=data.PATH_LABEL_SEPARATOR, prefix=data.PATH_PREFIX,
            num_classes=cfg.MODEL.NUM_CLASSES)
        self.backend = reader_for(cfg)
        self.seed = int(cfg.RNG_SEED)
        # Shared with forked or spawned loader workers: persistent workers see every set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.num_samples = cfg.AUG.NUM_SAMPLE if split == "train" else 1
        # Train clips left uint8 for the model's device to normalise (construct_loader sets it).
        self.uint8_clips = False
        self.num_frames = data.NUM_FRAMES
        self.sampling_rate = data.SAMPLING_RATE
        self.target_fps = data.TARGET_FPS
        self.jitter_fps = data.TRAIN_JITTER_FPS
        self.decoding_short_size = data.DECODING_SHORT_SIZE
        self.inverse_uniform = data.INV_UNIFORM_SAMPLE
        # USE_OFFSET_SAMPLING places PySlowFast's test clips; val always takes its one centre clip.
        self.use_offset = data.USE_OFFSET_SAMPLING or split != "test"
        self.mean, self.std = list(data.MEAN), list(data.STD)
        self.train_crop = data.TRAIN_CROP_SIZE
        self.jitter_scales = list(data.TRAIN_JITTER_SCALES)
        self.area_range = list(data.TRAIN_JITTER_SCALES_RELATIVE)
        self.aspect_range = list(data.TRAIN_JITTER_ASPECT_RELATIVE) or [3 / 4, 4 / 3]
        self.random_flip = data.RANDOM_FLIP
        self.test_crop = data.TEST_CROP_SIZE
        if split == "test":
            self.num_clips, self.num_crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
        else:
            self.num_clips, self.num_crops = 1, 1

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentation for ``epoch`` (call before iterating)."""
        self._epoch.fill_(int(epoch))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one item's ``inputs`` (used to build an empty batch)."""
        if self.split == "train":
            clip = (3, self.num_frames, self.train_crop, self.train_crop)
            return clip if self.num_samples == 1 else (self.num_samples,) + clip
        if self.split == "val":
            return (3, self.num_frames, self.test_crop, self.test_crop)
        return (self.num_clips * self.num_crops, 3, self.num_frames, self.test_crop, self.test_crop)

    def read_frames(self, decoder, frame_ids) -> torch.Tensor:
        """Decoded frames as uint8 [T, 3, H, W], resized (up or down) to short side
        DECODING_SHORT_SIZE when that is > 0, before any augmentation or test resize."""
        return self.decoded_frames(decoder.get_frames(frame_ids))

    def decoded_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """:meth:`read_frames` for frames a decoder returned (uint8 [T, H, W, 3])."""
        video = T.to_tchw(frames)
        if self.decoding_short_size > 0:
            video = T.resize_short_side(video, self.decoding_short_size)
        return video

    # ----------------------------------------------------------------- train
    def train_frame_ids(self, decoder, generator: torch.Generator) -> torch.Tensor:
        """Frame numbers of one random train clip in an opened video: long [num_frames]."""
        target_fps = self.target_fps
        if self.jitter_fps > 0:  # PySlowFast only ever raises it: + uniform [0, TRAIN_JITTER_FPS)
            target_fps += self.jitter_fps * torch.rand((), generator=generator, dtype=torch.float64).item()
        return train_clip_indices(
            decoder.num_frames, decoder.fps, num_frames=self.num_frames, sampling_rate=self.sampling_rate,
            target_fps=target_fps, generator=generator)

    def _train_clips(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """AUG.NUM_SAMPLE clips of one video, the frames of all of them decoded once:
        float [3, T, S, S], or [N, 3, T, S, S] when N > 1."""
        decoder = open_video(self.paths[index], self.backend)
        try:
            clip_ids = torch.stack([self.train_frame_ids(decoder, generator) for _ in range(self.num_samples)])
            needed, position = torch.unique(clip_ids, return_inverse=True)
            frames = self.read_frames(decoder, needed)
        finally:
            decoder.close()
        clips = self.clip_buffer(self.num_samples)
        for k, rows in enumerate(position):
            every_frame_once = len(rows) == len(frames) and bool((rows == torch.arange(len(rows))).all())
            # No copy of the frames when the clip uses each once.
            self.store_clip(self.augment(frames if every_frame_once else frames[rows], generator), clips[k])
        return clips[0] if self.num_samples == 1 else clips

    def clip_buffer(self, count: int) -> torch.Tensor:
        """Room for ``count`` train clips [count, 3, T, S, S]: float, or uint8 with ``uint8_clips``.

        The uint8 clips are seen over [count, T, S, S, 3] pixels, the channels-last layout the
        crops have, so storing one is a plain copy; the device that normalises them makes them contiguous.
        """
        size = (count, self.num_frames, self.train_crop, self.train_crop)
        if self.uint8_clips:
            return torch.empty(size + (3,), dtype=torch.uint8).movedim(-1, 1)
        return torch.empty((count, 3) + size[1:])

    def store_clip(self, clip: torch.Tensor, out: torch.Tensor) -> None:
        """Write an augmented uint8 [T, 3, S, S] clip into ``out`` ([3, T, S, S] of a :meth:`clip_buffer`),
        normalised unless ``uint8_clips``."""
        if self.uint8_clips:
            out.copy_(clip.permute(1, 0, 2, 3))
        else:
            T.normalize(clip, self.mean, self.std, out=out)

    def augment(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Train jitter, crop and flip of one uint8 [T, 3, H, W] clip."""
        if self.area_range:
            video = T.random_area_crop(video, area_range=self.area_range, aspect_range=self.aspect_range,
                                       crop_size=self.train_crop, generator=generator)
        else:
            video = T.random_short_side_crop(video, jitter_scales=self.jitter_scales, crop_size=self.train_crop,
                                             generator=generator, inverse_uniform=self.inverse_uniform)
        if self.random_flip:
            video = T.random_hflip(video, generator)
        return video

    def _train_item(self, index: int) -> dict:
        skipped = []
        current, last_error = index, ""
        for attempt in range(MAX_REPLACEMENTS):
            generator = item_generator(self.seed, self.epoch, index, attempt)
            try:
                inputs = self._train_clips(current, generator)
            except Exception as err:  # any bad file: never crash training, replace it
                skipped.append(self.paths[current])
                last_error = f"{self.paths[current]} ({describe_error(err)})"
                current = int(torch.randint(0, len(self), (), generator=generator).item())
                continue
            return {"inputs": inputs, "label": self.labels[current], "index": current, "skipped": skipped}
        raise DataListError(f"{MAX_REPLACEMENTS} videos in a row failed to decode (last: {last_error}); "
                            f"check DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX and the video files")

    # ------------------------------------------------------------- val / test
    def eval_frame_ids(self, decoder) -> torch.Tensor:
        """Frame numbers of this split's clips in an opened video: long [num_clips, num_frames]."""
        return eval_clip_indices(
            decoder.num_frames, decoder.fps, num_frames=self.num_frames, sampling_rate=self.sampling_rate,
            target_fps=self.target_fps, num_clips=self.num_clips, use_offset=self.use_offset)

    def decode_views(self, index: int) -> torch.Tensor:
        """All views of one video, decoding each needed frame once: float [V, 3, T, S, S]."""
        decoder = open_video(self.paths[index], self.backend)
        try:
            needed, position = torch.unique(self.eval_frame_ids(decoder), return_inverse=True)
            frames = self.read_frames(decoder, needed)
        finally:
            decoder.close()
        # Resize each distinct frame once; every view is then a crop of it, normalised
        # straight into its slot of the output (one write of the float views). The
        # channel-first copy makes each crop a run of contiguous rows to read.
        video = T.resize_short_side(frames, self.test_crop).transpose(0, 1).contiguous()
        views = torch.empty((len(position) * self.num_crops, 3, self.num_frames, self.test_crop, self.test_crop))
        for c, clip in enumerate(position):
            crops = T.eval_crops(video[:, clip], self.test_crop, self.num_crops)
            for k, crop in enumerate(crops):
                T.normalize(crop.transpose(0, 1), self.mean, self.std, out=views[c * self.num_crops + k])
        return views

    def _eval_item(self, index: int) -> dict:
        item = {"label": self.labels[index], "index": index, "failed": None}
        try:
            views = self.decode_views(index)
            item["inputs"] = views if self.split == "test" else views[0]
        except Exception as err:  # recorded and reported, never a crash
            item["inputs"] = None
            item["failed"] = (index, self.paths[index], describe_error(err))
        return item

    def __getitem__(self, index: int) -> dict:
        if self.split == "train":
            return self._train_item(index)
        return self._eval_item(index)

