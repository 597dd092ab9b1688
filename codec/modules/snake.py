"""Snake activation (Ziyin et al. 2020) as plain element-wise ops, so it exports to any ONNX runtime."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from codec.modules.streaming import StreamingModule


class Snake1d(StreamingModule):
    """``y = x + sin²(α·x) / (α + 1e-9)`` with a learned per-channel ``α (1, C, 1)``; ``(B, C, T) -> (B, C, T)``.

    Stateless and point-wise in time, hence causal.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        # 1e-9 keeps the reciprocal finite if a channel's alpha is driven to zero (as in SNAC/DAC).
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)
