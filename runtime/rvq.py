"""Multi-scale residual VQ on latent frames, numpy only (the runtime's quantiser).

The search itself is the kernels package's numpy path (``kernels.cpu``, torch-free): cosine
similarity, lowest index wins ties, exactly the torch quantiser's semantics.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from typing import Any, ContextManager, Sequence

import numpy as np

from kernels.cpu import NumpyRvq

Tables = Sequence[tuple[np.ndarray, np.ndarray]]


def top2_gap(queries: np.ndarray, normed: np.ndarray) -> np.ndarray:
    """Best minus second-best cosine score per query ``(M,)``: how close each search was to a tie."""
    q = np.asarray(queries, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    scores = q @ np.asarray(normed, dtype=np.float64).T
    part = -np.partition(-scores, 1, axis=1)[:, :2]
    return (part[:, 0] - part[:, 1]).astype(np.float32)


def make_rvq(tables: Tables, strides: Sequence[int] = (4, 2, 1)) -> NumpyRvq:
    """A reusable quantiser (preallocated search buffers; one per stream, it is not thread-safe).

    ``rvq(latent (T, D))`` -> (codes per layer ``[(T/s_1,), ...]``, quantised ``(T, D)``); layer l
    mean-pools the residual over ``strides[l]`` frames, takes the cosine-nearest normalised row
    (lowest index wins ties) and subtracts the unnormalised row repeated ``strides[l]`` times."""
    return NumpyRvq(tables, strides)


def rvq_step(latent: np.ndarray, tables: Tables, strides: Sequence[int] = (4, 2, 1)) -> tuple[list[np.ndarray], np.ndarray]:
    """One-shot quantisation of complete groups of latent frames ``(T, D)``."""
    return make_rvq(tables, strides)(latent)


def dequantize(codes: Sequence[np.ndarray], rows: Sequence[np.ndarray], strides: Sequence[int]) -> np.ndarray:
    """Summed quantised latent ``(T, D)`` from codes per layer (the decoder graph's input, transposed)."""
    total = None
    for c, r, s in zip(codes, rows, strides):
        q = np.repeat(r[np.asarray(c, dtype=np.int64)], s, axis=0)
        total = q if total is None else total + q
    return np.asarray(total, dtype=np.float32)


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def blas_single_thread() -> ContextManager[Any]:
    """Limit BLAS to one thread for the per-group search of the real-time path.

    A group's search is a (<= 4, D) x (D, 32000) GEMM of ~1 ms; OpenBLAS splits it over its threads,
    and on a loaded 2-core machine a descheduled helper thread stalls the call for a whole scheduler
    slice (measured: 1.7 ms p50 becomes 50-190 ms). One thread is both faster and predictable.
    Uses threadpoolctl (about 6 us per call); without it this is a no-op (set OPENBLAS_NUM_THREADS=1).
    """
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else nullcontext()
