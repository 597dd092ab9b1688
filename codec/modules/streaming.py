"""The streaming contract shared by every causal block.

A streaming block has three methods besides its offline ``forward(x)``:

- ``init_state(batch) -> tuple[Tensor, ...]``: the state before the first sample (zeros, fixed shapes);
- ``state_names() -> list[str]``: one dotted name per state tensor, same order as ``init_state``;
- ``step(x, *state) -> (y, *new_state)``: a pure function of its inputs (no in-place writes, no
  randomness, no Python branching on tensor values), so ``torch.onnx`` can trace it with the state as
  explicit inputs and outputs (``state_in.<name>`` / ``state_out.<name>``).

State shapes never depend on the chunk length, and running ``step`` over any chunking of an input
equals ``forward`` on the whole input (up to float rounding).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


def tracing() -> bool:
    """True while ``torch.jit``/``torch.onnx`` (legacy) traces: shape checks are skipped there, since the
    traced shapes are the example's (already checked in eager mode) and the checks would add TracerWarnings."""
    return torch.jit.is_tracing()


class StreamingModule(nn.Module):
    """Base class: a stateless block by default (``step`` is ``forward``)."""

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return ()

    def state_names(self) -> list[str]:
        return []

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got {len(state)} state tensors")
        return (self(x),)

    def _param_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device, tensor.dtype
        return torch.device("cpu"), torch.float32


class StreamingSequential(StreamingModule):
    """Named children run in order; their states are concatenated into one flat tuple.

    State names are the child's name joined with the child's own state names, so a deep state reads
    ``block2.res1.conv.prev``.
    """

    def __init__(self, children: "OrderedDict[str, StreamingModule]") -> None:
        super().__init__()
        for name, module in children.items():
            if not isinstance(module, StreamingModule):
                raise TypeError(f"child {name!r} is a {type(module).__name__}, not a StreamingModule")
            self.add_module(name, module)
        # The split of the flat state tuple is fixed by the structure: precompute it once.
        self._counts = [len(m.state_names()) for m in self.children()]

    def forward(self, x: Tensor) -> Tensor:
        for module in self.children():
            x = module(x)
        return x

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        out: list[Tensor] = []
        for module in self.children():
            out.extend(module.init_state(batch))
        return tuple(out)

    def state_names(self) -> list[str]:
        return [f"{name}.{sub}" for name, module in self.named_children() for sub in module.state_names()]

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if len(state) != sum(self._counts):
            raise ValueError(f"{type(self).__name__}.step expects {sum(self._counts)} state tensors, got {len(state)}")
        new_state: list[Tensor] = []
        pos = 0
        for module, count in zip(self.children(), self._counts):
            x, *child_state = module.step(x, *state[pos:pos + count])
            new_state.extend(child_state)
            pos += count
        return (x, *new_state)


class StepModule(nn.Module):
    """Wraps a streaming block so that ``forward(x, *state)`` is its ``step``: the module to trace for ONNX."""

    def __init__(self, block: StreamingModule) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        return self.block.step(x, *state)
