"""Outputs of ``runtime.stream``: an incrementally written file and a speaker fed from a ring.

Both take mono float32 at the codec rate. ``FileOutput`` writes every chunk as it is produced under a
hidden partial name and renames it onto the real name when closed, so an interrupted run leaves a
complete, valid file holding everything processed so far. ``SpeakerOutput`` resamples to the
device's native rate in the worker and its callback only copies from a ring, filling silence (and
counting an underrun) when the ring runs dry; when more than ``max_queue_s`` waits (a device that
stalls or plays slower than its clock says) the oldest queued audio is skipped and counted, so the
speaker never lags the input by more than that.
"""
from __future__ import annotations

from typing import Any

import os
import time
from pathlib import Path

import numpy as np

from runtime.audio_io import SFC_SET_UPDATE_HEADER_AUTO, AudioIOError, StreamResampler, import_sounddevice, \
    list_devices, resolve_device
from runtime.cli import partial_name
from runtime.ring import RingBuffer


class FileOutput:
    """16-bit (wav/flac) or float container chosen by suffix, written chunk by chunk at ``rate``."""

    def __init__(self, path: str | Path, rate: int) -> None:
        import soundfile as sf

        self.path, self.rate = Path(path), int(rate)
        self._tmp = partial_name(self.path)
        fmt = self.path.suffix[1:].upper()
        if fmt not in sf.available_formats():
            raise AudioIOError(f"cannot write {self.path}: unknown audio format {self.path.suffix!r} "
                               "(use .wav, .flac or .ogg)")
        subtype = "PCM_16" if fmt in ("WAV", "FLAC") else None
        try:
            self._f = sf.SoundFile(str(self._tmp), "w", self.rate, 1, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioIOError(f"cannot write {self.path}: {e}") from None
        self._auto_header()
        self.samples = 0

    def _auto_header(self) -> None:
        """Ask libsndfile to keep the header current after every write (a killed run still leaves a
        readable partial file); soundfile exposes no wrapper, so the C call is best effort."""
        try:
            import soundfile as sf

            sf._snd.sf_command(self._f._file, SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1)
        except (AttributeError, TypeError):
            pass

    def write(self, pcm: np.ndarray) -> float:
        """Append mono ``pcm`` (n,) (clipped to [-1, 1]); returns the perf_counter time it left."""
        pcm = np.clip(np.asarray(pcm, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self._f.write(pcm)
        self.samples += len(pcm)
        return time.perf_counter()

    def close(self, keep: bool = True) -> None:
        """Close; ``keep`` renames the file onto its real name, otherwise it is deleted."""
        if self._f.closed:
            return
        self._f.close()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


class SpeakerOutput:
    """A playback device at its native rate; mono is copied to at most 2 channels in the callback."""

    def __init__(self, device: str | None, rate: int, capacity_s: float = 10.0, prime_s: float = 0.04,
                 max_queue_s: float = 0.5) -> None:
        self.sd = import_sounddevice()
        self.device, self.info = resolve_device(device, "output")
        self.rate = int(self.info["default_samplerate"])
        self.channels = max(1, min(int(self.info["max_output_channels"]), 2))
        self._resample = StreamResampler(rate, self.rate)
        self.ring = RingBuffer(int(capacity_s * self.rate))
        self.underruns = 0
        self.samples = 0
        self._primed = False
        self._stream: Any = None
        self._scratch = np.zeros(0, dtype=np.float32)
        self.prime = int(prime_s * self.rate)
        self.max_queue = int(max_queue_s * self.rate)
        self.trimmed_samples = 0  # at the device rate
        self._open()  # now, not on the first write: opening can take long enough to build a backlog

    def _callback(self, outdata, frames, t, status) -> None:  # PortAudio thread: copy only
        if len(self._scratch) < frames:
            self._scratch = np.zeros(frames, dtype=np.float32)  # only when PortAudio grows its block
        got = self.ring.read_into(self._scratch[:frames])
        self._scratch[got:frames] = 0.0
        if got < frames and self._primed:
            self.underruns += 1
        outdata[:] = self._scratch[:frames, None]

    def _open(self) -> None:
        try:
            self._stream = self.sd.OutputStream(device=self.device, samplerate=self.rate, channels=self.channels,
                                                dtype="float32", callback=self._callback)  # PortAudio's safe latency
            self._stream.start()
        except (self.sd.PortAudioError, ValueError) as e:
            raise AudioIOError(f"cannot open audio output {self.info['name']!r} at {self.rate} Hz: {e}; "
                               f"devices: {'; '.join(list_devices().splitlines())}; "
                               "pass --output FILE.wav") from None

    def write(self, pcm: np.ndarray) -> float:
        """Queue mono ``pcm`` (n,) at the codec rate; returns when its last sample should be heard.

        The first write is preceded by ``prime_s`` of silence, a cushion against the worker's
        chunk-sized bursts; silence before it is not counted as underruns."""
        x = np.clip(self._resample(pcm), -1.0, 1.0)
        if not self._primed and self.prime:
            self.ring.write(np.zeros(self.prime, dtype=np.float32))
        excess = len(self.ring) + len(x) - max(self.max_queue, len(x))
        if excess > 0:  # the device fell behind (or stalled at start): skip the oldest, stay live
            self.trimmed_samples += self.ring.discard(excess)
        self.ring.write(x)
        self.samples += len(pcm)
        self._primed = True
        return time.perf_counter() + self.queued_s

    @property
    def queued_s(self) -> float:
        """Audio waiting before the speaker: the ring plus PortAudio's output latency."""
        lat = float(self._stream.latency) if self._stream is not None else 0.0
        return len(self.ring) / self.rate + lat

    def close(self, keep: bool = True, timeout: float = 5.0) -> None:
        """Play what is queued (up to ``timeout`` seconds; nothing when ``keep`` is False), then stop."""
        if self._stream is None:
            return
        deadline = time.perf_counter() + (timeout if keep else 0.0)
        while keep and len(self.ring) and time.perf_counter() < deadline:
            time.sleep(0.01)
        self._primed = False
        try:
            self._stream.stop()
            self._stream.close()
        except self.sd.PortAudioError:
            pass
        self._stream = None
