"""Held-out benchmark files (the split of ``codec/splits.py``) and pairwise time alignment.

Speech: the held-out speech sources of ``codec.splits.split`` (all ``vcc2018``, the 40 held-out
``librispeech_train`` speakers, LibriSpeech test-other, ``speech16k``, VoiceBank-DEMAND clean); sounds:
``esc50``. ``pick`` takes an evenly spaced, deterministic subset per source, so a quick run and a full
run draw from the same files in the same order.

``align(ref, est)`` finds the lag that maximises the cross-correlation within ``max_lag_s`` and cuts
both signals to their overlap: DSP codecs add a delay (Opus pre-skip residue, Codec2's frame
buffering, resampler group delay) that would otherwise be scored as distortion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from codec.splits import split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH_SOURCES = ("vcc2018", "librispeech_train", "librispeech", "speech16k", "voicebank_demand_clean")
SOUND_SOURCES = ("esc50",)
ENV_HOP = 16  # 1 ms at 16 kHz


def heldout_sources(data: Path = SHARED) -> dict[str, list[Path]]:
    """Held-out source name -> sorted files, exactly ``codec.splits.split(data)[1]``."""
    return split(data)[1]


def pick(files: Sequence[Path], n: int | None) -> list[Path]:
    """``n`` evenly spaced files of ``files`` (all when ``n`` is None or large)."""
    files = list(files)
    if n is None or n >= len(files):
        return files
    if n <= 0:
        return []
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def heldout_set(data: Path = SHARED, per_source: int | None = 8, sounds: int | None = 8) -> dict[str, list[Path]]:
    """``{"speech": [...], "sounds": [...]}``: ``per_source`` files of each held-out speech source
    (round-robin order, so any prefix mixes speakers) and ``sounds`` ESC-50 clips."""
    groups = heldout_sources(data)
    per = [pick(groups.get(s, []), per_source) for s in SPEECH_SOURCES]
    speech = [f for i in range(max(map(len, per), default=0)) for lst in per if i < len(lst) for f in [lst[i]]]
    esc = [f for s in SOUND_SOURCES for f in groups.get(s, [])]
    return {"speech": speech, "sounds": pick(esc, sounds)}


def source_of(path: Path) -> str:
    """The held-out source a file belongs to (its folder below the data root)."""
    parts = path.parts
    for s in ("vcc2018", "librispeech_train", "librispeech", "speech16k", "voicebank_demand", "esc50"):
        if s in parts:
            return s
    return path.parent.name


def find_lag(ref: np.ndarray, est: np.ndarray, max_lag: int) -> int:
    """The lag L (samples, |L| <= max_lag) maximising sum ref[t] * est[t + L]: est is late by L."""
    n = len(ref) + len(est) - 1
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(est.astype(np.float64), size) * np.conj(np.fft.rfft(ref.astype(np.float64), size))
    xc = np.fft.irfft(spec, size)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[int(np.argmax(xc[lags % size]))])


def envelope(x: np.ndarray, hop: int = ENV_HOP) -> np.ndarray:
    """Mean-removed log frame energy ``(n // hop,)``: phase-free, so parametric codecs align too."""
    frames = x[: len(x) // hop * hop].astype(np.float64).reshape(-1, hop)
    env = np.log10((frames ** 2).mean(axis=1) + 1e-8)
    return env - env.mean()


def find_delay(ref: np.ndarray, est: np.ndarray, max_lag: int, hop: int = ENV_HOP) -> int:
    """Coarse lag from the energy envelopes (Codec2 keeps no waveform phase), refined by waveform
    cross-correlation within one envelope hop (Opus keeps it)."""
    coarse = find_lag(envelope(ref, hop), envelope(est, hop), max(1, max_lag // hop)) * hop
    shifted = est[coarse:] if coarse >= 0 else np.concatenate([np.zeros(-coarse, est.dtype), est])
    return coarse + find_lag(ref, shifted, hop)


def align(ref: np.ndarray, est: np.ndarray, max_lag_s: float = 0.1,
          rate: int = 16000) -> tuple[np.ndarray, np.ndarray, int]:
    """``(ref', est', lag)``: both cut to their overlap after removing est's delay ``lag`` (samples)."""
    ref = np.asarray(ref, dtype=np.float32).reshape(-1)
    est = np.asarray(est, dtype=np.float32).reshape(-1)
    lag = find_delay(ref, est, int(max_lag_s * rate))
    if lag >= 0:
        est = est[lag:]
    else:
        ref = ref[-lag:]
    n = min(len(ref), len(est))
    return ref[:n], est[:n], lag
