"""Frozen frame-feature teachers for the layer-2 consistency loss (``--teacher NAME``).

The paper's teacher is the Whisper-base encoder (512-d frames at 50 Hz). All teachers here give frames
at 50 Hz (Whisper's hop of 320 samples at 16 kHz after its stride-2 conv):

- ``whisper``: the paper's teacher, Whisper base's encoder output (512-d), run by CTranslate2 (int8, CPU,
  one thread) from the PyPI parts found by ``runtime.whisper_base`` (no download; the ``bench`` extra);
  features of the crop alone (the encoder sees only the crop's own frames, not a 30 s window);
- ``logmel``: 80-band log-mel spectrogram (Whisper's front end);
- ``mfcc``: the first 40 DCT-II coefficients of that log-mel (decorrelated, spectral envelope);
- ``none``: no consistency loss.

Features are standardised per clip and band (zero mean, unit variance over time) so the MSE has the
same scale for loud and quiet clips. Register more with :func:`register_teacher`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
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


class WhisperTeacher(Teacher):
    """Whisper base encoder frames ``(B, T_t, 512)`` at 50 Hz; ``T_t = N // 320`` (Whisper's own mel front end).

    CTranslate2 runs the encoder (int8 on CPU, ``threads`` intra-op threads) on the batch's crops as they are,
    so a frame depends only on its own crop; no gradient flows (the features are targets). Raises
    ``ImportError`` with the install line when faster-whisper or the Whisper parts are missing.
    """

    def __init__(self, sample_rate: int = 16000, threads: int = 1) -> None:
        super().__init__()
        if sample_rate != 16000:
            raise ValueError(f"the Whisper teacher needs 16 kHz audio, the codec runs at {sample_rate} Hz")
        from runtime.whisper_base import AsrUnavailable, available, model_dir

        if (reason := available()):
            raise AsrUnavailable(f"--teacher whisper: {reason}")
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self._model: Any = ctranslate2.models.Whisper(str(model_dir()), device="cpu", compute_type="int8",
                                                      intra_threads=threads)
        self._mel = FeatureExtractor(feature_size=self._model.n_mels)
        self._storage = ctranslate2.StorageView
        self.dim, self.frame_rate = 512, sample_rate / 320

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        clips = wav.detach().float().reshape(-1, wav.shape[-1]).cpu().numpy()
        frames = 2 * (clips.shape[-1] // 320)  # mel frames (hop 160), even for the encoder's stride-2 conv
        mels = np.stack([self._mel(c, padding=0)[:, :frames] for c in clips]).astype(np.float32)
        out = self._model.encode(self._storage.from_array(np.ascontiguousarray(mels)), to_cpu=True)
        feats = torch.from_numpy(np.array(out, dtype=np.float32)).to(wav.device)  # (B, T_t, 512)
        return _standardise(feats.transpose(1, 2)).transpose(1, 2)


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
    "whisper": lambda sr: WhisperTeacher(sr),
}


def register_teacher(name: str, factory: Callable[[int], Teacher | None]) -> None:
    TEACHERS[name] = factory


def get_teacher(name: str, sample_rate: int = 16000) -> Teacher | None:
    """The frozen teacher called ``name`` (None for ``none``); KeyError lists the known names."""
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)}")
    return TEACHERS[name](sample_rate)
