"""``build_model(cfg)``: the network a config describes."""

from torch import nn

from ..config import validate_cfg
from .resnet import build_resnet


def build_model(cfg) -> nn.Module:
    """Build MODEL.MODEL_NAME (ResNet) for MODEL.ARCH on the CPU, initialised, not wrapped.

    The config is validated first (ConfigError naming key, value and allowed values).

    With BN.NORM_TYPE sync_batchnorm every BatchNorm (context blocks' included)
    becomes nn.SyncBatchNorm, which needs an initialised process group to train.
    """
    validate_cfg(cfg)
    model = build_resnet(cfg)
    if cfg.BN.NORM_TYPE == "sync_batchnorm":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
