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
from kernels.reference import dequantize, top2_gap  # noqa: F401  (the runtime's names for them)

Tables = Sequence[tuple[np.ndarray, np.ndarray]]


def make_rvq(tables: Tables, strides: Sequence[int] = (4, 2, 1), backend: str = "numpy") -> Any:
    """A reusable quantiser (preallocated search buffers; one per stream, it is not thread-safe).

    ``rvq(latent (T, D))`` -> (codes per layer ``[(T/s_1,), ...]``, quantised ``(T, D)``); layer l
    mean-pools the residual over ``strides[l]`` frames, takes the cosine-nearest normalised row
    (lowest index wins ties) and subtracts the unnormalised row repeated ``strides[l]`` times.
    backend: "numpy" (BLAS, torch-free) or "triton" (``kernels.rvq.TritonRvqNumpy``: tables on the GPU,
    CUDA-graph replay per chunk length; imports torch, so only the GPU path uses it)."""
    if backend == "triton":
        from kernels.rvq import TritonRvqNumpy

        return TritonRvqNumpy(tables, strides)
    if backend != "numpy":
        raise ValueError(f"unknown search backend {backend!r}; choose numpy or triton")
    return NumpyRvq(tables, strides)



def rvq_step(latent: np.ndarray, tables: Tables, strides: Sequence[int] = (4, 2, 1)) -> tuple[list[np.ndarray], np.ndarray]:
    """One-shot quantisation of complete groups of latent frames ``(T, D)``."""
    return make_rvq(tables, strides)(latent)


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
