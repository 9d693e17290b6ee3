import logging
import os

import numpy as np
import pytest
import torch

# Tests run two at a time on a 2-core machine: one thread each.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore_video_gc_logger():
    """setup_logging (called by in-process runs) stops propagation and binds handlers to the
    test's captured stdout; undo that so caplog works in whichever test runs next."""
    yield
    logger = logging.getLogger("video_gc")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture
def make_video(tmp_path):
    """Write a small real H.264 video with PyAV; returns its path."""
    from video_gc.utils.video_io import write_video

    def _make(name="v.mp4", num_frames=30, height=64, width=80, fps=30.0, seed=0):
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 255, size=(1, height, width, 3), dtype=np.uint8)
        ramp = (np.arange(num_frames, dtype=np.int64)[:, None, None, None] * 7) % 256
        frames = ((base.astype(np.int64) + ramp) % 256).astype(np.uint8)
        return write_video(str(tmp_path / name), frames, fps=fps)

    return _make
