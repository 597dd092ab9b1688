"""Live and file audio I/O for ``runtime.stream``: sources and sinks at their native rates.

Sources deliver mono float32 blocks at the source's own rate with the wall-clock time their last
sample arrived; sinks take mono float32 at the codec rate. Devices are opened at their native
sample rate (mixed to mono, at most 2 channels captured); resampling happens in the worker with a
streaming resampler (soxr), never in an audio callback. Callbacks only copy into fixed-size rings.
sounddevice is imported lazily, so file-to-file streaming works on machines without PortAudio.
"""
from __future__ import annotations

from typing import Any

import threading
import time
from pathlib import Path

import numpy as np

from runtime.ring import RingBuffer

Block = tuple[np.ndarray, float]  # (mono float32 (n,), perf_counter time its last sample arrived)
SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile: rewrite the header on every write


class AudioIOError(RuntimeError):
    """An audio device or file cannot be used (the message is one line and says what to do)."""


def import_sounddevice():
    """``sounddevice``, or an AudioIOError with an install hint."""
    try:
        import sounddevice as sd
    except OSError as e:  # the Python package is there but libportaudio is not
        raise AudioIOError(f"sounddevice cannot load PortAudio ({e}); install it with "
                           "`apt-get install libportaudio2`, or pass --input FILE --output FILE") from None
    except ImportError:
        raise AudioIOError("live audio needs sounddevice: `pip install sounddevice` (and libportaudio2); "
                           "or pass --input FILE --output FILE") from None
    return sd


def list_devices() -> str:
    """PortAudio's devices, one per line (``index: name (in N, out M, rate R Hz)``)."""
    sd = import_sounddevice()
    devs = sd.query_devices()
    if len(devs) == 0:
        return "(PortAudio reports no audio devices)"
    return "\n".join(f"{i}: {d['name']} (in {d['max_input_channels']}, out {d['max_output_channels']}, "
                     f"rate {d['default_samplerate']:.0f} Hz)" for i, d in enumerate(devs))


def _device_arg(device: str | None, kind: str) -> int | str | None:
    """``--device`` for one direction: ``ID`` (index or name) for both, or ``IN,OUT``."""
    if device is not None and "," in device:
        device = device.split(",", 1)[0 if kind == "input" else 1].strip() or None
    return int(device) if device is not None and device.strip().isdigit() else device


def resolve_device(device: str | None, kind: str) -> tuple[int | str | None, dict]:
    """``(sounddevice device argument, its info dict)`` for an ``"input"`` or ``"output"`` device;
    an AudioIOError listing what exists (and suggesting files) when there is none."""
    sd = import_sounddevice()
    arg = _device_arg(device, kind)
    try:
        info = sd.query_devices(arg, kind)
    except (ValueError, sd.PortAudioError) as e:
        names = "; ".join(ln for ln in list_devices().splitlines())
        what = f"audio {kind} device {arg!r}" if arg is not None else f"default audio {kind} device"
        flag = "--input FILE" if kind == "input" else "--output FILE.wav"
        raise AudioIOError(f"no {what} ({e}); devices: {names}; pass {flag} to stream a file instead") from None
    return arg, dict(info)


class StreamResampler:
    """Streaming mono resampler (soxr ``ResampleStream``, HQ); equals offline ``soxr.resample``."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = int(src_rate), int(dst_rate)
        self._rs = None
        if self.src_rate != self.dst_rate:
            import soxr

            self._rs = soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block ``(n,)``; ``last=True`` flushes the filter's tail."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        if self._rs is None:
            return x
        return np.ascontiguousarray(self._rs.resample_chunk(x, last=last), dtype=np.float32)


def mono(block: np.ndarray) -> np.ndarray:
    """``(n, channels)`` -> ``(n,)`` float32 mean of the channels."""
    block = np.asarray(block, dtype=np.float32)
    return block if block.ndim == 1 else block.mean(axis=1, dtype=np.float32)


class FileReader:
    """Any soundfile-readable file as mono float32 blocks at its own rate (non-finite samples -> 0)."""

    def __init__(self, path: str | Path) -> None:
        import soundfile as sf

        self.path = Path(path)
        if not self.path.exists():
            raise AudioIOError(f"input {self.path} does not exist (use --input mic for the microphone)")
        if not self.path.is_file():
            raise AudioIOError(f"input {self.path} is a directory or special file, not an audio file")
        if self.path.stat().st_size == 0:
            raise AudioIOError(f"input {self.path} is empty (0 bytes)")
        try:
            self._f = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            raise AudioIOError(f"cannot read audio file {self.path}: {e} (corrupt or unsupported format)") from None
        self.rate, self.channels, self.frames = int(self._f.samplerate), int(self._f.channels), int(self._f.frames)
        if self.frames == 0:
            self._f.close()
            raise AudioIOError(f"audio file {self.path} contains no samples")
        self.nonfinite = 0

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` (or fewer at the end) samples, mixed to mono ``(m,)``; empty at the end."""
        import soundfile as sf

        try:
            data = self._f.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioIOError(f"cannot read audio file {self.path}: {e}") from None
        pcm = mono(data)
        bad = ~np.isfinite(pcm)
        if bad.any():
            self.nonfinite += int(bad.sum())
            pcm = np.where(bad, np.float32(0), pcm)
        return pcm

    def close(self) -> None:
        self._f.close()


class PacedFileInput:
    """A file played in real time into a ring, like a microphone: a thread reads one block per
    ``block_s`` of audio and sleeps until the wall clock reaches it (no drift: deadlines are
    absolute). ``read`` returns what arrived; ``finished`` once the file is exhausted and drained."""

    def __init__(self, reader: FileReader, block_s: float = 0.02, capacity_s: float = 10.0) -> None:
        self.reader, self.rate = reader, reader.rate
        self.block = max(1, int(round(block_s * self.rate)))
        self.ring = RingBuffer(int(capacity_s * self.rate))
        self._t_last = 0.0
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-file", daemon=True)
        self.error: BaseException | None = None
        self.end_reason = "eof"

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                pcm = self.reader.read(self.block)
                if pcm.size == 0:
                    break
                sent += len(pcm)
                delay = self._t0 + sent / self.rate - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                self.ring.write(pcm)
                self._t_last = time.perf_counter()
        except BaseException as e:  # reported by the worker, in the main thread
            self.error = e
        finally:
            self._done.set()

    def read(self, timeout: float = 0.5) -> Block:
        """Everything that arrived since the last call (waits up to ``timeout`` for something)."""
        deadline = time.perf_counter() + timeout
        while len(self.ring) == 0 and not self._done.is_set() and time.perf_counter() < deadline:
            time.sleep(0.005)
        if self.error is not None:
            raise self.error
        t = self._t_last
        return self.ring.read(), t

    @property
    def finished(self) -> bool:
        return self._done.is_set() and len(self.ring) == 0

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.reader.close()


class MicInput:
    """A capture device at its native rate; the callback mixes to mono and copies into a ring."""

    def __init__(self, device: str | None, block_s: float = 0.02, capacity_s: float = 10.0) -> None:
        self.sd = import_sounddevice()
        self.device, self.info = resolve_device(device, "input")
        self.rate = int(self.info["default_samplerate"])
        self.channels = max(1, min(int(self.info["max_input_channels"]), 2))
        self.block = max(1, int(round(block_s * self.rate)))
        self.ring = RingBuffer(int(capacity_s * self.rate))
        self._t_last = 0.0
        self.status_overflows = 0
        self._stream: Any = None
        self.end_reason = "device lost"  # a capture stream only ends by itself when the device goes

    def _callback(self, indata, frames, t, status) -> None:  # PortAudio thread: copy only
        if status.input_overflow:
            self.status_overflows += 1
        self.ring.write(indata.mean(axis=1) if self.channels > 1 else indata[:, 0])
        self._t_last = time.perf_counter()

    def start(self) -> None:
        try:
            self._stream = self.sd.InputStream(device=self.device, samplerate=self.rate, channels=self.channels,
                                               dtype="float32", blocksize=self.block,
                                               callback=self._callback)
            self._stream.start()
        except (self.sd.PortAudioError, ValueError) as e:
            raise AudioIOError(f"cannot open audio input {self.info['name']!r} at {self.rate} Hz: {e}; "
                               f"devices: {'; '.join(list_devices().splitlines())}; pass --input FILE") from None

    @property
    def latency_s(self) -> float:
        return float(self._stream.latency) if self._stream is not None else 0.0

    def read(self, timeout: float = 0.5) -> Block:
        deadline = time.perf_counter() + timeout
        while len(self.ring) == 0 and self.active and time.perf_counter() < deadline:
            time.sleep(0.005)
        return self.ring.read(), self._t_last

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    @property
    def finished(self) -> bool:
        return not self.active and len(self.ring) == 0

    @property
    def overruns(self) -> int:
        return self.ring.overruns + self.status_overflows

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except self.sd.PortAudioError:
                pass  # the device already vanished: nothing left to stop
