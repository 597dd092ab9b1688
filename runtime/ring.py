"""A fixed-size single-producer / single-consumer ring buffer of float32 samples.

Audio callbacks only copy into (or out of) one of these: no allocation, no model calls. The
capacity is fixed at construction; what does not fit is counted, never grown into.
"""
from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """``capacity`` mono float32 samples.

    ``write`` on a full ring keeps the newest samples and drops the oldest (a live stream must stay
    live), counting them in ``overrun_samples``; ``read_into`` on a short ring returns what it has
    and the caller fills silence. A lock guards the indices: held for two memcpy's at most.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._read = 0   # absolute sample counters; index = counter % capacity
        self._write = 0
        self._lock = threading.Lock()
        self.overrun_samples = 0
        self.overruns = 0

    def __len__(self) -> int:
        with self._lock:
            return self._write - self._read

    @property
    def total_written(self) -> int:
        return self._write

    def write(self, x: np.ndarray) -> int:
        """Append ``x`` (n,); returns how many old samples were dropped to make room."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if len(x) > self.capacity:  # only the newest capacity samples can survive anyway
            dropped_here = len(x) - self.capacity
            x = x[-self.capacity:]
        else:
            dropped_here = 0
        with self._lock:
            self._copy_in(x)
            self._write += len(x)
            dropped = max(0, self._write - self._read - self.capacity)
            self._read += dropped
            dropped += dropped_here
            if dropped:
                self.overruns += 1
                self.overrun_samples += dropped
        return dropped

    def _copy_in(self, x: np.ndarray) -> None:
        start = self._write % self.capacity
        first = min(len(x), self.capacity - start)
        self._buf[start:start + first] = x[:first]
        self._buf[:len(x) - first] = x[first:]

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` oldest samples into ``out`` (n,); returns how many were copied."""
        with self._lock:
            n = min(len(out), self._write - self._read)
            start = self._read % self.capacity
            first = min(n, self.capacity - start)
            out[:first] = self._buf[start:start + first]
            out[first:n] = self._buf[:n - first]
            self._read += n
        return n

    def read(self, n: int | None = None) -> np.ndarray:
        """Remove and return up to ``n`` (default: all) oldest samples as a new array."""
        out = np.empty(len(self) if n is None else min(n, len(self)), dtype=np.float32)
        k = self.read_into(out)
        return out[:k]

    def discard(self, n: int) -> int:
        """Drop up to ``n`` oldest samples (a worker skipping ahead); returns how many."""
        with self._lock:
            k = min(n, self._write - self._read)
            self._read += k
        return k
