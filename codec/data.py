"""Training audio: any wav/flac/ogg at any rate and channel count -> seeded 16 kHz mono crops.

Sources are folders (searched recursively), audio files, or list files (one path per line,
relative to the list file; ``#`` comments). Each clip is read with soundfile, mixed to mono,
resampled with soxr and loudness-normalised **per clip** (RMS to ``target_rms_db`` dBFS, gain capped
at +30 dB so near-silent files are not blown up into noise, then scaled down if the peak would pass
``peak``): per clip rather than per crop so a crop keeps the clip's real dynamics (a pause stays quiet).
Unreadable, empty and too-short files are skipped and named in one warning.

Items are ``(wav (1, segment) float32 tensor, text or None)``; text comes from codec/semantic.py.
Crops are deterministic given (seed, epoch, index).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from codec.semantic import clip_text

AUDIO_EXTS = frozenset({".wav", ".flac", ".ogg"})
MAX_GAIN_DB = 30.0


# One audio reader and one AudioError for the whole project (runtime/audio.py, torch-free).
from runtime.audio import AudioError, read_audio  # noqa: E402,F401  (AudioError is re-exported)


@dataclass(frozen=True)
class Clip:
    path: Path
    source: int  # index of the --data source it came from (for balanced sampling)
    seconds: float
    text: str | None


def find_audio_files(sources: Sequence[str | Path]) -> list[tuple[Path, int]]:
    """``(path, source index)`` of every audio file named by ``sources`` (sorted per source)."""
    out: list[tuple[Path, int]] = []
    for k, src in enumerate(sources):
        src = Path(src)
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
        elif src.is_file() and src.suffix.lower() in AUDIO_EXTS:
            files = [src]
        elif src.is_file():
            files = _read_list_file(src)
        else:
            raise FileNotFoundError(f"data source not found: {src}")
        out.extend((f, k) for f in files)
    return out


def _read_list_file(path: Path) -> list[Path]:
    files = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line)
            files.append(p if p.is_absolute() else path.parent / p)
    return files


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """A whole file as float32 mono ``(n,)`` at ``sample_rate`` (``runtime.audio.read_audio``)."""
    return read_audio(path, sample_rate)


def normalize_loudness(x: np.ndarray, target_rms_db: float = -20.0, peak: float = 0.95) -> np.ndarray:
    """Scale ``x (n,)`` to ``target_rms_db`` dBFS RMS (gain <= +30 dB), then limit the peak to ``peak``."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms <= 0.0:
        return x
    gain = min(10.0 ** (target_rms_db / 20.0) / rms, 10.0 ** (MAX_GAIN_DB / 20.0))
    top = float(np.abs(x).max()) * gain
    if top > peak:
        gain *= peak / top
    return (x * gain).astype(np.float32)


class AudioDataset(Dataset):
    """Random ``segment``-sample crops of the clips in ``sources`` (see module docstring).

    Clips shorter than ``segment`` but at least ``min_seconds`` long are zero-padded at the end.
    """

    def __init__(self, sources: Sequence[str | Path], segment: int, sample_rate: int = 16000, seed: int = 0,
                 min_seconds: float = 0.2, target_rms_db: float = -20.0, with_text: bool = True,
                 cache: bool = True) -> None:
        if segment <= 0:
            raise ValueError(f"segment must be positive, got {segment}")
        self.segment, self.sample_rate, self.seed = int(segment), int(sample_rate), int(seed)
        self.min_seconds, self.target_rms_db = float(min_seconds), float(target_rms_db)
        self.epoch = 0
        self.clips, skipped = _scan(find_audio_files(sources), min_seconds, with_text)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unusable audio file(s): " + "; ".join(skipped), stacklevel=2)
        if not self.clips:
            raise AudioError(f"no usable audio files in {[str(s) for s in sources]}")
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def audio(self, index: int) -> np.ndarray:
        """The whole normalised 16 kHz clip ``(n,)`` (cached when ``cache``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        x = normalize_loudness(load_audio(self.clips[index].path, self.sample_rate), self.target_rms_db)
        if len(x) < self.min_seconds * self.sample_rate:
            raise AudioError(f"{self.clips[index].path}: too short after resampling ({len(x)} samples)")
        if self._cache is not None:
            self._cache[index] = x
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str | None]:
        """Crop of clip ``index % len(self)``; the full ``index`` seeds the crop (see the sampler)."""
        for k in range(len(self.clips)):  # a file that breaks at read time is replaced by the next one
            i = (index + k) % len(self.clips)
            if i in self._bad:
                continue
            try:
                x = self.audio(i)
            except AudioError as exc:
                self._bad.add(i)
                warnings.warn(f"skipping unusable audio file: {exc}", stacklevel=2)
                continue
            return torch.from_numpy(self._crop(x, index)).unsqueeze(0), self.clips[i].text
        raise AudioError("every audio file failed to load")

    def _crop(self, x: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if len(x) >= self.segment:
            start = int(rng.integers(0, len(x) - self.segment + 1))
            return x[start:start + self.segment].copy()
        return np.pad(x, (0, self.segment - len(x)))


def _scan(files: list[tuple[Path, int]], min_seconds: float, with_text: bool) -> tuple[list[Clip], list[str]]:
    clips, skipped = [], []
    for path, src in files:
        try:
            info = sf.info(str(path))
        except Exception as exc:
            skipped.append(f"{path} (unreadable: {str(exc).strip() or type(exc).__name__})")
            continue
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if info.frames <= 0:
            skipped.append(f"{path} (empty)")
        elif seconds < min_seconds:
            skipped.append(f"{path} (too short: {seconds:.3f} s < {min_seconds} s)")
        else:
            clips.append(Clip(path, src, seconds, clip_text(path) if with_text else None))
    return clips, skipped


class ShardedEpochSampler(Sampler[int]):
    """Seeded per-epoch order of dataset indices, sharded over DDP ranks like DistributedSampler.

    ``balanced`` draws each source with equal probability (with replacement) instead of a
    permutation, so a 2,000-clip folder does not drown an 80-clip one. An epoch has at least
    ``min_per_rank`` items per rank (small datasets repeat). A repeated clip is yielded as
    ``index + n * position`` so the dataset crops it differently. ``start`` skips the first indices
    of this rank's epoch (mid-epoch resume).
    """

    def __init__(self, sources: Sequence[int], seed: int = 0, rank: int = 0, world_size: int = 1,
                 balanced: bool = False, min_per_rank: int = 1) -> None:
        self.sources = np.asarray(sources)
        self.seed, self.rank, self.world_size, self.balanced = seed, rank, world_size, balanced
        self.epoch, self.start = 0, 0
        if len(self.sources) == 0:
            raise ValueError("no clips to sample")
        self.per_rank = max(len(self.sources) // world_size, int(min_per_rank))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch))
        n, total = len(self.sources), self.per_rank * self.world_size
        if self.balanced:
            weights = 1.0 / np.bincount(self.sources)[self.sources]
            order = rng.choice(n, size=total, replace=True, p=weights / weights.sum())
        else:
            order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
        return order + n * np.arange(total)  # distinct crop seeds for repeats; dataset takes % n

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        mine = order[self.rank::self.world_size]
        return iter(mine[self.start:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


def collate(batch: list[tuple[torch.Tensor, str | None]]) -> tuple[torch.Tensor, list[str | None]]:
    """``[(wav (1, N), text)]`` -> ``(wav (B, 1, N), [text])``."""
    return torch.stack([w for w, _ in batch]), [t for _, t in batch]


def make_loader(dataset: AudioDataset, batch_size: int, sampler: ShardedEpochSampler,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler`` order; incomplete last batches are dropped."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=True, persistent_workers=False)


def batches_per_epoch(sampler: ShardedEpochSampler, batch_size: int) -> int:
    return max(1, math.floor(sampler.per_rank / batch_size))
