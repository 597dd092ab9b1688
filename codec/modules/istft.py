"""A causal inverse-STFT output head (Vocos-style) for the decoder: ``(B, C, L) -> (B, 1, L·hop)``.

The decoder's transposed-conv stages at high sample rates are replaced by one spectral frame per ``hop``
output samples: a small backbone predicts, per frame, a log-magnitude and a phase for each of the
``n_fft/2 + 1`` bins (``n_fft = 4·hop``), and a fixed windowed inverse real DFT turns them into ``n_fft``
samples that are overlap-added (Vocos, Siuzdak 2023). Magnitude and phase are separate outputs, so a
harmonic's pitch and level are set directly instead of being built up by stacked upsampling convolutions,
which on this project's budget left a periodic buzz in voiced speech (issue 9).

Causality: frame ``j`` writes samples ``[j·hop, j·hop + n_fft)``, so output sample ``n`` reads frames
``<= n // hop`` only, exactly like the causal transposed convolutions (``CausalConvTranspose1d`` with
kernel ``n_fft`` and stride ``hop``; its ``tail`` of ``n_fft - hop`` samples is the overlap-add state).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor

from codec.modules.conv import CausalConv1d, CausalConvTranspose1d
from codec.modules.residual import ResidualUnit
from codec.modules.snake import Snake1d
from codec.modules.streaming import StreamingModule, StreamingSequential

# exp(log-magnitude) is clipped here (as in Vocos) so that an early, untrained frame cannot overflow.
MAX_LOG_MAGNITUDE = math.log(100.0)


def inverse_dft_kernel(n_fft: int, hop: int) -> Tensor:
    """``(2F, 1, n_fft)`` with ``F = n_fft // 2 + 1``: rows ``[0, F)`` map real parts, ``[F, 2F)`` imaginary
    parts to one periodic-Hann-windowed frame, scaled so that overlap-adding frames at ``hop`` inverts a
    Hann-windowed STFT (the squared window sums to ``1.5`` at ``hop = n_fft / 4``)."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    ola = float((window ** 2).reshape(-1, hop).sum(0).mean()) if n_fft % hop == 0 else 1.0
    angle = 2 * math.pi * k * n / n_fft
    real = weight * torch.cos(angle) * window / (n_fft * ola)
    imag = -weight * torch.sin(angle) * window / (n_fft * ola)
    return torch.cat([real, imag]).unsqueeze(1).to(torch.float32)


class PolarToCartesian(StreamingModule):
    """``(B, 2F, L)`` log-magnitudes and phases -> ``(B, 2F, L)`` real and imaginary parts; point-wise, stateless."""

    def forward(self, x: Tensor) -> Tensor:
        log_mag, phase = x.float().chunk(2, dim=1)
        mag = torch.exp(torch.clamp(log_mag, max=MAX_LOG_MAGNITUDE))
        return torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


class InverseDFT(CausalConvTranspose1d):
    """The fixed (never trained) windowed inverse real DFT with overlap-add: ``(B, 2F, L) -> (B, 1, L·hop)``.

    Runs in float32 also under a bf16 autocast: the sum over ``2F`` bins loses too much in bf16.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__(2 * (n_fft // 2 + 1), 1, hop, kernel_size=n_fft, use_weight_norm=False)
        with torch.no_grad():
            self.conv.weight.copy_(inverse_dft_kernel(n_fft, hop))
            self.conv.bias.zero_()
        self.conv.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        with torch.autocast(x.device.type, enabled=False):
            return super().step(x.float(), *state)


class ISTFTHead(StreamingSequential):
    """``(B, in_dim, L) -> (B, 1, L·hop)``: Snake, conv k to ``dim``, ``len(dilations)`` residual units,
    Snake, 1x1 conv to ``2·(n_fft/2 + 1)`` log-magnitudes and phases, inverse DFT (``n_fft = overlap·hop``)."""

    def __init__(self, in_dim: int, dim: int, hop: int, dilations: tuple[int, ...], kernel_size: int,
                 depthwise: bool, overlap: int = 4) -> None:
        n_fft = overlap * hop
        layers: OrderedDict[str, StreamingModule] = OrderedDict()
        layers["snake_in"] = Snake1d(in_dim)
        layers["conv_in"] = CausalConv1d(in_dim, dim, kernel_size)
        for i, d in enumerate(dilations):
            layers[f"res{i + 1}"] = ResidualUnit(dim, d, kernel_size, dim if depthwise else 1)
        layers["snake_out"] = Snake1d(dim)
        layers["spectrum"] = CausalConv1d(dim, 2 * (n_fft // 2 + 1), 1)
        layers["polar"] = PolarToCartesian()
        layers["idft"] = InverseDFT(n_fft, hop)
        super().__init__(layers)
        self.n_fft, self.hop = n_fft, hop
