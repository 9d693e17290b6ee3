"""Video ResNets and global-context blocks.

    from video_gc.models import build_model
    model = build_model(cfg)          # logits = model(clips [N, 3, T, H, W])
"""

from .build import build_model
from .resnet import VideoResNet, build_resnet, init_weights

__all__ = ["build_model", "build_resnet", "init_weights", "VideoResNet"]
