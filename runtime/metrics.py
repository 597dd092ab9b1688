"""Speech quality metrics for denoising: PESQ wide-band, STOI and SI-SDR.

PESQ and STOI wrap the ``pesq`` and ``pystoi`` packages (test/benchmark dependencies, imported
lazily with an install hint); SI-SDR is numpy. Signals are mono float arrays ``(n,)`` at 16 kHz;
the reference and the estimate are cut to their common length. PESQ returns NaN where the ITU
algorithm finds no speech (e.g. a silent estimate) instead of raising.
"""
from __future__ import annotations

import numpy as np

INSTALL_HINT = "pip install pesq pystoi (or the project's test extra: pip install -e '.[test]')"


class MetricsUnavailable(ImportError):
    """pesq / pystoi are not installed."""


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    est = np.asarray(est, dtype=np.float64).reshape(-1)
    n = min(len(ref), len(est))
    if n == 0:
        raise ValueError("metrics need non-empty signals")
    return ref[:n], est[:n]


def si_sdr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals; NaN for a silent estimate
    or reference (the ratio is undefined)."""
    ref, est = _pair(ref, est)
    ref, est = ref - ref.mean(), est - est.mean()
    if not ref.any() or not est.any():
        return float("nan")
    target = (np.dot(est, ref) / (np.dot(ref, ref) + eps)) * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_wb(ref: np.ndarray, est: np.ndarray, rate: int = 16000) -> float:
    """PESQ wide-band MOS-LQO (ITU-T P.862.2), NaN when no speech is detected."""
    try:
        from pesq import NoUtterancesError, PesqError, pesq
    except ImportError as e:
        raise MetricsUnavailable(f"PESQ needs the pesq package: {INSTALL_HINT}") from e
    if rate != 16000:
        raise ValueError(f"PESQ wide-band needs 16 kHz audio, got {rate} Hz")
    ref, est = _pair(ref, est)
    try:
        return float(pesq(rate, ref, est, "wb"))
    except (NoUtterancesError, PesqError, ValueError):  # silence: cypesq fails on NaN levels
        return float("nan")


def stoi(ref: np.ndarray, est: np.ndarray, rate: int = 16000) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), 0..1."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as e:
        raise MetricsUnavailable(f"STOI needs the pystoi package: {INSTALL_HINT}") from e
    ref, est = _pair(ref, est)
    return float(_stoi(ref, est, rate, extended=False))


def speech_metrics(ref: np.ndarray, est: np.ndarray, rate: int = 16000) -> dict[str, float]:
    """``{"pesq_wb", "stoi", "si_sdr"}`` of ``est`` against the clean reference ``ref``."""
    return {"pesq_wb": pesq_wb(ref, est, rate), "stoi": stoi(ref, est, rate), "si_sdr": si_sdr(ref, est)}


def _mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-mel filters ``(n_mels, n_fft // 2 + 1)``, unit area."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    mel_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2)
    hz_pts = 700.0 * (10 ** (mel_pts / 2595.0) - 1.0)
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz_pts[:-2, None], hz_pts[1:-1, None], hz_pts[2:, None]
    up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    return fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-9)


def mel_distance(ref: np.ndarray, est: np.ndarray, rate: int = 16000,
                 resolutions: tuple[tuple[int, int, int], ...] = ((512, 128, 64), (1024, 256, 80),
                                                                  (2048, 512, 128))) -> float:
    """Multi-resolution log-mel L1 distance (mean over (n_fft, hop, n_mels) resolutions), the
    codec literature's "mel distance": log10 of mel power, floor 1e-5. Lower is better; 0 = equal."""
    from scipy.signal import stft

    ref, est = _pair(ref, est)
    total = 0.0
    for n_fft, hop, n_mels in resolutions:
        fb = _mel_filterbank(rate, n_fft, n_mels)
        mels = []
        for x in (ref, est):
            _, _, z = stft(x, fs=rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary=None,
                           padded=True)
            mels.append(np.log10(np.maximum(fb @ (np.abs(z) ** 2), 1e-5)))
        total += float(np.mean(np.abs(mels[0] - mels[1])))
    return total / len(resolutions)
