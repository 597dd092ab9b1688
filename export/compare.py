"""Numerical comparison used by every backend check (ORT, TensorRT, the runtime). numpy only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """``10 log10(|ref|² / |ref - test|²)`` in dB; ``inf`` when identical, ``-inf`` for error on silence."""
    ref = np.asarray(ref, dtype=np.float64)
    err = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    if err == 0.0:
        return float("inf")
    sig = float(np.sum(ref ** 2))
    return 10.0 * np.log10(sig / err) if sig > 0 else float("-inf")


@dataclass(frozen=True)
class Match:
    """Outcome of comparing one tensor: SNR in dB and max abs error; ``ok`` under the given limits."""

    name: str
    snr_db: float
    max_abs: float
    ok: bool

    def __str__(self) -> str:
        return f"{self.name}: snr {self.snr_db:.1f} dB, max|err| {self.max_abs:.2e} {'ok' if self.ok else 'FAIL'}"


def compare(name: str, ref: np.ndarray, test: np.ndarray, min_snr_db: float, atol: float = 1e-6) -> Match:
    """Float tensors pass at ``snr >= min_snr_db`` or ``max|err| <= atol`` (near-silent state buffers
    have no meaningful SNR); integer tensors (ring-buffer write indices) must be identical."""
    ref, test = np.asarray(ref), np.asarray(test)
    if ref.shape != test.shape:
        return Match(name, float("-inf"), float("inf"), False)
    if not np.issubdtype(ref.dtype, np.floating):
        same = bool(np.array_equal(ref, test))
        return Match(name, float("inf") if same else float("-inf"), 0.0 if same else float("inf"), same)
    max_abs = float(np.max(np.abs(ref.astype(np.float64) - test))) if ref.size else 0.0
    snr = snr_db(ref, test)
    return Match(name, snr, max_abs, bool(snr >= min_snr_db or max_abs <= atol))
