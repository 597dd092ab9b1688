"""The dilated residual unit of the SEANet/SNAC stacks, made causal."""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor

from codec.modules.conv import CausalConv1d
from codec.modules.snake import Snake1d
from codec.modules.streaming import StreamingModule, StreamingSequential


class ResidualUnit(StreamingModule):
    """``x + conv1x1(snake(conv_k,d(snake(x))))``; ``(B, C, T) -> (B, C, T)``.

    The dilated conv (kernel ``k``, dilation ``d``, depthwise when ``groups == C``) keeps ``(k-1)·d``
    samples of history as its streaming state ``conv.prev``; the 1x1 conv needs none.
    """

    def __init__(self, channels: int, dilation: int, kernel_size: int = 7, groups: int = 1) -> None:
        super().__init__()
        self.branch = StreamingSequential(OrderedDict(
            snake1=Snake1d(channels),
            conv=CausalConv1d(channels, channels, kernel_size, dilation=dilation, groups=groups),
            snake2=Snake1d(channels),
            proj=CausalConv1d(channels, channels, 1),
        ))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return self.branch.init_state(batch)

    def state_names(self) -> list[str]:
        return self.branch.state_names()

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        y, *new_state = self.branch.step(x, *state)
        return (x + y, *new_state)
