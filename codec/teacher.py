"""Frozen frame-feature teachers for the layer-2 consistency loss (``--teacher NAME``).

The paper uses Whisper-base encoder frames (512-d, 50 Hz). Whisper weights cannot be downloaded on
the project's machines, so the registry offers deterministic, download-free teachers with the same
50 Hz frame rate (hop 320 at 16 kHz, Whisper's 25 ms window):

- ``logmel``: 80-band log-mel spectrogram (Whisper's front end);
- ``mfcc``: the first 40 DCT-II coefficients of that log-mel (decorrelated, spectral envelope);
- ``none``: no consistency loss.

Features are standardised per clip and band (zero mean, unit variance over time) so the MSE has the
same scale for loud and quiet clips. Register more with :func:`register_teacher`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from codec.losses import MelSpectrogram


class Teacher(nn.Module):
    """Frozen teacher: ``wav (B, 1, N) -> features (B, T_t, dim)`` at ``frame_rate`` Hz."""

    dim: int
    frame_rate: float

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: always eval mode


class LogMelTeacher(Teacher):
    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop: int = 320) -> None:
        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop, n_mels)
        self.dim, self.frame_rate = n_mels, sample_rate / hop
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        feats = self.mel(wav.reshape(-1, wav.shape[-1]))  # (B, n_mels, T_t)
        return _standardise(self.project(feats)).transpose(1, 2)

    def project(self, logmel: Tensor) -> Tensor:
        return logmel


class MfccTeacher(LogMelTeacher):
    def __init__(self, sample_rate: int = 16000, n_mfcc: int = 40, n_mels: int = 80) -> None:
        super().__init__(sample_rate, n_mels)
        self.register_buffer("dct", _dct_matrix(n_mfcc, n_mels), persistent=False)
        self.dim = n_mfcc

    def project(self, logmel: Tensor) -> Tensor:
        return torch.einsum("cm,bmt->bct", self.dct, logmel)


def _dct_matrix(n_out: int, n_in: int) -> Tensor:
    """Orthonormal DCT-II rows ``(n_out, n_in)``."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    m = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.float()


def _standardise(x: Tensor) -> Tensor:
    """Per clip and channel over time: ``(B, C, T)`` -> zero mean, unit variance."""
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)


TEACHERS: dict[str, Callable[[int], Teacher | None]] = {
    "none": lambda sr: None,
    "logmel": lambda sr: LogMelTeacher(sr),
    "mfcc": lambda sr: MfccTeacher(sr),
}


def register_teacher(name: str, factory: Callable[[int], Teacher | None]) -> None:
    TEACHERS[name] = factory


def get_teacher(name: str, sample_rate: int = 16000) -> Teacher | None:
    """The frozen teacher called ``name`` (None for ``none``); KeyError lists the known names."""
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)}")
    return TEACHERS[name](sample_rate)
