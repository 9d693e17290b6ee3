"""Video decoding, sampling, transforms, datasets and loaders.

    from video_gc.data import build_dataset, construct_loader, shuffle_loader
"""

from .coverage import coverage_line, write_coverage_report
from .dataset import VideoDataset
from .decoder import VideoDecodeError, open_video
from .lists import DataListError, read_video_list
from .loader import VideoLoader, build_dataset, construct_loader, shuffle_loader
from .samplers import ShardedEvalSampler, dedup_by_index

__all__ = [
    "DataListError",
    "ShardedEvalSampler",
    "VideoDataset",
    "VideoDecodeError",
    "VideoLoader",
    "build_dataset",
    "construct_loader",
    "coverage_line",
    "dedup_by_index",
    "open_video",
    "read_video_list",
    "shuffle_loader",
    "write_coverage_report",
]
