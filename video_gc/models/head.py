"""Classification head: global average pool -> dropout -> fc (He et al., Table 1;
dropout before the fc as in the Non-local and SlowFast papers)."""

import torch
from torch import nn


class ResNetHead(nn.Module):
    """Logits [N, num_classes] from features [N, C, T, H, W] of any size.

    Adaptive pooling makes the head independent of the clip length and crop size,
    so the same model scores 224 training crops and 256 test crops. No softmax:
    callers get logits.
    """

    def __init__(self, *, dim_in: int, num_classes: int, dropout_rate: float = 0.5) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, C] before dropout and fc."""
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(self.features(x)))
