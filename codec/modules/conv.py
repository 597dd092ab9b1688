"""Causal (left-padded) convolutions with weight norm, and their streaming state.

A conv with kernel ``k``, dilation ``d`` and stride ``s`` is left-padded by ``P = (k-1)·d + 1 - s``
samples, so output ``j`` reads inputs ``[(j+1)·s - 1 - (k-1)·d, (j+1)·s - 1]``: nothing after the end of
its own stride. An input of length ``N`` (a multiple of ``s``) gives exactly ``N/s`` outputs. In
streaming the zero padding becomes a state of the last ``P`` input samples (``prev``, zeros at the
start, which is why streaming equals offline).

The transposed conv (kernel ``2s`` by default, any ``k >= s``, stride ``s``) is trimmed causally: output ``n`` only reads inputs
``i <= n/s``, and the trailing ``k - s`` overlap samples are dropped offline; streaming keeps them as
the ``tail`` state and adds them to the head of the next chunk (overlap-add).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from codec.modules.streaming import StreamingModule, tracing


class CausalConv1d(StreamingModule):
    """Weight-normed causal ``Conv1d``: ``(B, C_in, L) -> (B, C_out, L/stride)``.

    State: ``prev (B, C_in, P)`` with ``P = (kernel-1)·dilation + 1 - stride`` (absent when ``P == 0``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, use_weight_norm: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (kernel_size - 1) * dilation + 1 - stride
        if self.pad < 0:
            raise ValueError(f"kernel {kernel_size} x dilation {dilation} is shorter than stride {stride}")
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                         groups=groups, bias=bias)
        self.conv = weight_norm(conv) if use_weight_norm else conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        if self.pad == 0:
            return ()
        device, dtype = self._param_device_dtype()
        return (torch.zeros(batch, self.conv.in_channels, self.pad, device=device, dtype=dtype),)

    def state_names(self) -> list[str]:
        return ["prev"] if self.pad else []

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        length = x.shape[-1]
        if not tracing() and length % self.stride:
            raise ValueError(f"chunk of {length} samples is not a multiple of the conv stride {self.stride}")
        if self.pad == 0:
            return (self.conv(x),)
        (prev,) = state
        buf = torch.cat([prev, x], dim=-1)
        return self.conv(buf), buf[..., length:]


class CausalConvTranspose1d(StreamingModule):
    """Weight-normed causal ``ConvTranspose1d``: ``(B, C_in, L) -> (B, C_out, L·stride)``.

    State: ``tail (B, C_out, kernel - stride)``, the bias-free overlap not yet complete.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int | None = None,
                 use_weight_norm: bool = True) -> None:
        super().__init__()
        kernel_size = 2 * stride if kernel_size is None else kernel_size
        if kernel_size < stride:
            raise ValueError(f"transposed conv needs kernel >= stride, got k={kernel_size}, s={stride}")
        self.stride = stride
        self.overlap = kernel_size - stride
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.conv = weight_norm(conv) if use_weight_norm else conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)[..., : x.shape[-1] * self.stride]

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        if self.overlap == 0:
            return ()
        device, dtype = self._param_device_dtype()
        return (torch.zeros(batch, self.conv.out_channels, self.overlap, device=device, dtype=dtype),)

    def state_names(self) -> list[str]:
        return ["tail"] if self.overlap else []

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        emit = x.shape[-1] * self.stride
        if self.overlap == 0:
            return (self.conv(x),)
        (tail,) = state
        bias = self.conv.bias[None, :, None]
        # Bias-free so that the overlap-add counts the bias once, when a sample is emitted.
        y = F.conv_transpose1d(x, self.conv.weight, None, stride=self.stride)
        y = torch.cat([y[..., : self.overlap] + tail, y[..., self.overlap:]], dim=-1)
        return y[..., :emit] + bias, y[..., emit:]


def fold_weight_norm(module: nn.Module) -> int:
    """Replace every weight-norm parametrization under ``module`` by its plain weight (for export).

    Returns the number of folded layers. Outputs are unchanged; the state-dict keys become ``*.weight``.
    """
    folded = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
    return folded
