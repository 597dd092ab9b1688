"""The worker side of ``runtime.stream``: source blocks -> codec-rate chunks -> processor -> sink.

``Pipeline`` resamples each native-rate block with a streaming resampler, cuts the result into the
processor's chunks (whole 120 ms codec groups), runs the processor and hands its output to the sink,
timing every stage and the end-to-end latency of each chunk's first sample. ``run_live`` drives it
from a real-time source (microphone or paced file) and applies the lag policy: when more than
``max_lag`` seconds of captured audio are waiting, the oldest whole chunks are dropped, the sink
gets the same length of silence (files stay time-aligned with the input), and ``dropped_chunks``
counts them; the stream never drifts behind the input by more than ``max_lag``. A processor with
``parallel`` > 1 and ``process_many`` (denoise) gets up to that many whole chunks at once when
more than one is waiting: a stream that fell behind catches up with spans decoded side by side
(`runtime.lm_parallel`), and ``run_fast`` reads files in blocks of that many chunks. ``gather``
makes a live stream wait for that many whole chunks before each batch: latency x gather for the
batched decoding's lower real-time factor.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Protocol

import numpy as np

from runtime.audio_io import StreamResampler
from runtime.stream_stats import StreamStats, level_dbfs


class Processor(Protocol):
    chunk: int

    def process(self, pcm: np.ndarray, stats: StreamStats) -> np.ndarray | None: ...

    def flush(self, tail: np.ndarray, stats: StreamStats) -> np.ndarray | None: ...


class Sink(Protocol):
    def write(self, pcm: np.ndarray) -> float: ...


class StatusLine:
    """The live status line on stderr (a terminal only; at most 5 updates a second)."""

    def __init__(self, stats: StreamStats, enabled: bool) -> None:
        self.stats, self.enabled = stats, enabled and sys.stderr.isatty()
        self._last = 0.0

    def update(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.enabled and (force or now - self._last > 0.2):
            self._last = now
            print("\r" + self.stats.status_line(), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            print(file=sys.stderr)


class Pipeline:
    """Blocks at ``src_rate`` in, processed chunks at ``rate`` out.

    realtime: the source delivers samples as they happen (arrival of sample i = time its block
    arrived minus the samples after it), so "capture" and "end to end" are true latencies.
    recorder: an optional sink that receives the resampled input (``--record-input``)."""

    def __init__(self, processor: Processor, sink: Sink | None, stats: StreamStats, src_rate: int,
                 realtime: bool, status: StatusLine | None = None, recorder: Sink | None = None,
                 gather: int = 1) -> None:
        if gather < 1 or (gather > 1 and not hasattr(processor, "process_many")):
            raise ValueError(f"gather {gather}: needs >= 1, and > 1 only for a processor that decodes "
                             "several chunks at once (denoise)")
        self.processor, self.sink, self.stats, self.recorder = processor, sink, stats, recorder
        self.gather = gather  # whole chunks to wait for before processing (latency x gather)
        self.rate, self.realtime, self.status = stats.rate, realtime, status
        self.resample = StreamResampler(src_rate, stats.rate)
        self._buf = np.zeros(0, dtype=np.float32)
        self._arrivals: deque[tuple[int, float]] = deque()  # (cumulative end sample, its arrival time)
        self.fed = 0   # codec-rate samples received
        self.done = 0  # codec-rate samples processed

    def feed(self, pcm: np.ndarray, t_end: float, last: bool = False) -> None:
        """A native-rate mono block whose last sample arrived at ``t_end`` (perf_counter)."""
        x = self.resample(pcm, last=last)
        if len(x):
            self.stats.level_db = level_dbfs(x)
            self.stats.audio_in_samples += len(x)
            self.fed += len(x)
            self._arrivals.append((self.fed, t_end))
            self._buf = np.concatenate([self._buf, x])
            if self.recorder is not None:  # --record-input: what the worker got, at the codec rate
                self.recorder.write(x)
        self._drain(final=last)

    def _drain(self, final: bool) -> None:
        """Process the whole chunks waiting: once ``gather`` are there (every one at the end)."""
        n = self.processor.chunk
        while len(self._buf) >= n * (1 if final else self.gather):
            k = min(self.batch, len(self._buf) // n)
            if k > 1:
                chunks = [self._buf[i * n:(i + 1) * n] for i in range(k)]
                self._buf = self._buf[k * n:]
                self._run_many(chunks)
                continue
            chunk, self._buf = self._buf[:n], self._buf[n:]
            self._run(chunk, flush=False)

    @property
    def batch(self) -> int:
        """Whole chunks the processor takes at once (1 unless it has ``process_many``)."""
        if not hasattr(self.processor, "process_many"):
            return 1
        return max(int(getattr(self.processor, "parallel", 1)), self.gather)

    def finish(self) -> None:
        """End of input: flush the resampler, then the processor's partial last chunk."""
        self.feed(np.zeros(0, dtype=np.float32), time.perf_counter(), last=True)
        tail, self._buf = self._buf, np.zeros(0, dtype=np.float32)
        self._run(tail, flush=True)

    def insert_silence(self, n: int) -> None:
        """``n`` codec-rate samples of dropped input: silence to the sink, nothing processed."""
        if self.sink is not None and n > 0:
            self.sink.write(np.zeros(n, dtype=np.float32))
            self.stats.audio_out_samples += n

    def _arrival(self, i: int) -> float:
        while self._arrivals and self._arrivals[0][0] <= i:
            self._arrivals.popleft()
        if not self._arrivals:
            return time.perf_counter()
        end, t = self._arrivals[0]
        return t - (end - 1 - i) / self.rate if self.realtime else t

    def _run_many(self, chunks: list[np.ndarray]) -> None:
        """Several whole chunks through ``process_many``; each chunk's latency from its own arrival."""
        arrivals = []
        for c in chunks:
            arrivals.append(self._arrival(self.done))
            self.done += len(c)
        t0 = time.perf_counter()
        if self.realtime:
            for a in arrivals:
                self.stats.add("capture", max(0.0, t0 - a))
        outs = self.processor.process_many(chunks, self.stats)  # type: ignore[attr-defined]
        per_chunk = (time.perf_counter() - t0) * 1000.0 / len(chunks)
        self.stats.chunk_ms.extend([per_chunk] * len(chunks))
        for out, arrival in zip(outs, arrivals):
            self._emit(out, arrival)

    def _emit(self, out: np.ndarray | None, arrival: float) -> None:
        if out is not None and len(out) and self.sink is not None:
            t_write = time.perf_counter()
            t_leave = self.sink.write(out)
            self.stats.add("playback", t_leave - t_write)
            self.stats.audio_out_samples += len(out)
            self.stats.end_to_end.append((t_leave - arrival) * 1000.0)
        if self.status is not None:
            self.status.update()

    def _run(self, chunk: np.ndarray, flush: bool) -> None:
        arrival = self._arrival(self.done)
        t0 = time.perf_counter()
        if self.realtime:
            self.stats.add("capture", max(0.0, t0 - arrival))
        out = (self.processor.flush if flush else self.processor.process)(chunk, self.stats)
        if len(chunk):
            self.stats.chunk_ms.append((time.perf_counter() - t0) * 1000.0)
        self.done += len(chunk)
        self._emit(out, arrival)


def limit_lag(pcm: np.ndarray, chunk_native: int, max_lag: int) -> tuple[np.ndarray, int]:
    """Drop the oldest whole chunks of ``pcm`` (n,) until at most ``max_lag`` samples remain (never
    less than one chunk's worth when there was more); returns (kept samples, chunks dropped)."""
    if len(pcm) <= max_lag:
        return pcm, 0
    k = -(-(len(pcm) - max_lag) // chunk_native)
    return pcm[k * chunk_native:], k


def run_live(source, pipeline: Pipeline, stop: threading.Event, max_lag_s: float,
             stall_s: float = 3.0, first_data_s: float = 10.0) -> str:
    """Drive ``pipeline`` from a started real-time source until it ends, ``stop`` is set, or the device
    stops delivering audio (nothing for ``stall_s``; ``first_data_s`` at start, since some devices,
    PulseAudio's among them, deliver nothing for their first second or two). Returns "eof",
    "stopped" or "device lost"; the pipeline is finished either way."""
    chunk_native = max(1, int(round(pipeline.processor.chunk * source.rate / pipeline.rate)))
    max_lag = max(int(max_lag_s * source.rate), chunk_native)
    try:
        reason = _live_loop(source, pipeline, stop, chunk_native, max_lag, stall_s, first_data_s)
    finally:
        source.stop()
    rest, t_end = source.read(timeout=0.0)  # drain what arrived before the stop (lag policy too)
    _feed_live(pipeline, rest, t_end, chunk_native, max_lag)
    pipeline.stats.overruns = source.overruns
    pipeline.finish()
    return reason


def _live_loop(source, pipeline: Pipeline, stop: threading.Event, chunk_native: int, max_lag: int,
               stall_s: float, first_data_s: float) -> str:
    last_data = time.perf_counter() + first_data_s - stall_s
    while not stop.is_set():
        pcm, t_end = source.read(timeout=0.25)
        if len(pcm):
            last_data = time.perf_counter()
            _feed_live(pipeline, pcm, t_end, chunk_native, max_lag)
        elif source.finished:
            return source.end_reason  # "eof" for files; a microphone stream only ends if lost
        elif time.perf_counter() - last_data > stall_s:
            return "device lost"
    return "stopped"


def _feed_live(pipeline: Pipeline, pcm: np.ndarray, t_end: float, chunk_native: int, max_lag: int) -> None:
    pcm, dropped = limit_lag(pcm, chunk_native, max_lag)
    if dropped:
        pipeline.stats.dropped_chunks += dropped
        pipeline.insert_silence(dropped * pipeline.processor.chunk)
    if len(pcm):
        pipeline.feed(pcm, t_end)


def run_fast(reader, pipeline: Pipeline, stop: threading.Event, block_s: float = 0.5) -> str:
    """Feed a ``FileReader`` as fast as the processor goes, in blocks of at least ``block_s`` and of
    the processor's whole batch of chunks; returns "eof" or "stopped"."""
    chunks = pipeline.batch * pipeline.processor.chunk * reader.rate / pipeline.rate
    block = max(1, int(block_s * reader.rate), int(np.ceil(chunks)) + 1)
    reason = "eof"
    try:
        while True:
            if stop.is_set():
                reason = "stopped"
                break
            pcm = reader.read(block)
            if pcm.size == 0:
                break
            pipeline.feed(pcm, time.perf_counter())
    finally:
        reader.close()
    pipeline.finish()
    return reason

