"""Audio file I/O for the runtime: any soundfile format in, mono float32 at the codec rate out.

Files are read with soundfile (wav, flac, ogg, mp3 ...), mixed down to mono by averaging channels
and resampled with soxr ("HQ"). Every failure is an ``AudioError`` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.cli import atomic_path


class AudioError(ValueError):
    """An audio file is missing, empty, corrupt, or cannot be written."""


def read_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """Read ``path`` as mono float32 ``(n,)`` at ``rate`` Hz (mixed down and resampled as needed)."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist")
    if not path.is_file():
        raise AudioError(f"audio path {path} is a directory or special file, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes)")
    try:
        data, src_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"cannot read audio file {path}: {e} (corrupt or unsupported format)") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    return resample(mix_to_mono(data), int(src_rate), rate)


def mix_to_mono(data: np.ndarray) -> np.ndarray:
    """``(n, channels)`` or ``(n,)`` -> ``(n,)`` float32 by averaging the channels."""
    data = np.asarray(data, dtype=np.float32)
    return data if data.ndim == 1 else data.mean(axis=1, dtype=np.float32)


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono ``(n,)`` float32 with soxr; a no-op when the rates agree."""
    if src_rate <= 0 or dst_rate <= 0:
        raise AudioError(f"invalid sample rates {src_rate} -> {dst_rate}")
    pcm = np.ascontiguousarray(pcm, dtype=np.float32)
    if src_rate == dst_rate:
        return pcm
    import soxr

    return np.ascontiguousarray(soxr.resample(pcm, src_rate, dst_rate, quality="HQ"), dtype=np.float32)


def write_audio(path: str | Path, pcm: np.ndarray, rate: int, out_rate: int | None = None) -> None:
    """Write mono float32 ``pcm`` (at ``rate``) to ``path`` as 16-bit PCM, resampled to ``out_rate``.

    The container comes from the file suffix (``.wav``, ``.flac``, ``.ogg``); samples are clipped to
    [-1, 1] because an untrained or overdriven decoder can exceed full scale.
    """
    import soundfile as sf

    out_rate = out_rate or rate
    pcm = np.clip(resample(np.asarray(pcm, dtype=np.float32).reshape(-1), rate, out_rate), -1.0, 1.0)
    path = Path(path)
    if not path.parent.is_dir():
        raise AudioError(f"cannot write {path}: directory {path.parent} does not exist")
    fmt = sf.available_formats()
    if path.suffix[1:].upper() not in fmt:
        raise AudioError(f"cannot write {path}: unknown audio format {path.suffix!r} (use .wav, .flac or .ogg)")
    if path.is_dir():
        raise AudioError(f"cannot write {path}: it is a directory")
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    try:
        with atomic_path(path) as tmp:  # never a half-written file under the real name (Ctrl-C)
            sf.write(str(tmp), pcm, out_rate, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(f"cannot write {path}: {e}") from None
