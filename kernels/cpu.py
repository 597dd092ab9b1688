"""Cosine nearest-codeword search and the multi-scale residual step with numpy only.

This is the torch-free runtime's path: it must never import torch or triton. The search is a
blocked float32 GEMM (numpy ``matmul`` into a preallocated ``out=`` block, i.e. BLAS sgemm/sgemv)
followed by a row-argmax per block and a running (max, index) per query, so the full M x N score
matrix is never materialised. Semantics match ``kernels.nearest.nearest_codeword_reference``:
queries are L2-normalised (``q / max(||q||, 1e-12)``), the codebook is assumed L2-normalised,
the result is ``argmax_n <q_m, c_n>`` with the lowest index winning ties.

Threads: BLAS (numpy's OpenBLAS) uses all cores by default. In a process that also runs ONNX
Runtime and llama.cpp threads, or on a busy machine, set ``OPENBLAS_NUM_THREADS=1`` before numpy
is imported: oversubscribed OpenBLAS threads spin and were measured 2-70x slower on the 2-core
dev box under load (benchmarks/results/nearest.md is the single-thread run,
nearest_default_threads.md the default one).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NORM_EPS = 1e-12

# Score block (block_m x block_n float32) of 2-4 MiB stays in L2/L3 for the argmax pass; the
# codebook block is streamed by BLAS. Measured on the 2-core EPYC dev box (benchmarks/nearest.py).
DEFAULT_BLOCK_M = 256
DEFAULT_BLOCK_N = 4096


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float array (float16/float32/float64), got {x.dtype}")
    return x


class NumpyNearest:
    """Blocked cosine nearest-codeword search against one fixed codebook.

    Holds the codebook ``(N, D)`` as C-contiguous float32 (converted once: fp16 tables are upcast
    here, because numpy has no fp16 BLAS) and preallocated query/score blocks, so the streaming
    case (a few queries per 120 ms group) allocates only its (M,) outputs. Not thread-safe: give
    each thread its own instance (they may share the codebook array).
    """

    def __init__(self, codebook: np.ndarray, block_m: int = DEFAULT_BLOCK_M,
                 block_n: int = DEFAULT_BLOCK_N) -> None:
        cb = _as_matrix(codebook, "codebook")
        if cb.shape[0] == 0 or cb.shape[1] == 0:
            raise ValueError(f"codebook must be non-empty, got shape {cb.shape}")
        if block_m < 1 or block_n < 1:
            raise ValueError(f"block sizes must be positive, got block_m={block_m} block_n={block_n}")
        self.codebook = np.ascontiguousarray(cb, dtype=np.float32)
        self.num_codes, self.dim = self.codebook.shape
        self.block_m = int(block_m)
        self.block_n = int(min(block_n, self.num_codes))
        self._q = np.empty((self.block_m, self.dim), np.float32)
        self._norm = np.empty(self.block_m, np.float32)
        self._scores = np.empty(self.block_m * self.block_n, np.float32)
        self._arg = np.empty(self.block_m, np.int64)
        self._rows = np.arange(self.block_m)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest codeword of each query.

        queries: ``(M, D)`` float array (any float dtype; computed in float32).
        Returns ``idx (M,) int64`` and ``score (M,) float32`` (cosine of the winner).
        """
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have D={q.shape[1]} but the codebook has D={self.dim}")
        m_total = q.shape[0]
        idx = np.zeros(m_total, np.int64)
        score = np.full(m_total, -np.inf, np.float32)
        for m0 in range(0, m_total, self.block_m):
            m1 = min(m_total, m0 + self.block_m)
            self._search_block(q[m0:m1], idx[m0:m1], score[m0:m1])
        return idx, score

    def _search_block(self, q_in: np.ndarray, idx: np.ndarray, best: np.ndarray) -> None:
        m = q_in.shape[0]
        q = self._q[:m]
        np.copyto(q, q_in, casting="same_kind")
        norm = self._norm[:m]
        np.einsum("md,md->m", q, q, out=norm)
        np.sqrt(norm, out=norm)
        np.maximum(norm, NORM_EPS, out=norm)
        q /= norm[:, None]
        arg, rows = self._arg[:m], self._rows[:m]
        for n0 in range(0, self.num_codes, self.block_n):
            nb = min(self.num_codes - n0, self.block_n)
            # A flat buffer keeps the (m, nb) view C-contiguous, which matmul's out= requires.
            s = self._scores[: m * nb].reshape(m, nb)
            np.matmul(q, self.codebook[n0 : n0 + nb].T, out=s)
            np.argmax(s, axis=1, out=arg)
            val = s[rows, arg]
            # Strict '>' over increasing n0 keeps the lowest index on ties across blocks;
            # argmax already returns the first maximum inside a block.
            better = val > best
            best[better] = val[better]
            idx[better] = arg[better] + n0


def nearest_codeword_np(queries: np.ndarray, codebook: np.ndarray,
                        block_m: int = DEFAULT_BLOCK_M,
                        block_n: int = DEFAULT_BLOCK_N) -> tuple[np.ndarray, np.ndarray]:
    """One-shot cosine search: queries ``(M, D)``, L2-normalised codebook ``(N, D)`` ->
    ``idx (M,) int64``, ``score (M,) float32``. Build a :class:`NumpyNearest` to reuse buffers."""
    return NumpyNearest(codebook, block_m=block_m, block_n=block_n).search(queries)


class NumpyRvq:
    """Multi-scale residual quantisation of complete groups (the runtime's per-group call).

    tables: one ``(rows (N_l, D), normed (N_l, D))`` pair per layer (unnormalised projected rows
    used as the quantised value, L2-normalised rows used for the search), as in
    ``codebooks.npz`` / ``MultiScaleRVQ.projected_tables()``. strides: average-pool factor per
    layer; the first must be a multiple of every other and the last is usually 1.
    """

    def __init__(self, tables: Sequence[tuple[np.ndarray, np.ndarray]],
                 strides: Sequence[int] = (4, 2, 1)) -> None:
        if len(tables) != len(strides):
            raise ValueError(f"{len(tables)} tables but {len(strides)} strides")
        self.strides = tuple(int(s) for s in strides)
        if any(s < 1 for s in self.strides) or any(self.strides[0] % s for s in self.strides):
            raise ValueError(f"strides {self.strides} must be positive and divide the first")
        self.rows = [np.ascontiguousarray(_as_matrix(r, "rows"), np.float32) for r, _ in tables]
        self.searchers = [NumpyNearest(n) for _, n in tables]
        self.dim = self.rows[0].shape[1]
        for l, (r, s) in enumerate(zip(self.rows, self.searchers)):
            if r.shape != (s.num_codes, s.dim) or r.shape[1] != self.dim:
                raise ValueError(f"layer {l}: rows {r.shape} and normed {(s.num_codes, s.dim)} "
                                 f"must have the same shape and D={self.dim}")

    def __call__(self, latent: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """latent ``(T, D)`` or ``(B, T, D)`` with T a multiple of ``strides[0]``.

        Returns ``codes`` (one int64 array per layer, ``(.., T / stride_l)``) and the quantised
        latent (the sum of the layers' upsampled rows), float32 with the latent's shape.
        """
        x = np.asarray(latent)
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(f"latent must be (T, {self.dim}) or (B, T, {self.dim}), got {x.shape}")
        if x.shape[-2] % self.strides[0]:
            raise ValueError(f"T={x.shape[-2]} is not a whole number of {self.strides[0]}-frame groups")
        b, t = (1, x.shape[0]) if x.ndim == 2 else x.shape[:2]
        residual = np.array(x, dtype=np.float32).reshape(b, t, self.dim)
        quant = np.zeros_like(residual)
        codes = []
        for rows, searcher, s in zip(self.rows, self.searchers, self.strides):
            pooled = residual.reshape(b, t // s, s, self.dim).mean(axis=2)
            idx, _ = searcher.search(pooled.reshape(-1, self.dim))
            q = rows[idx].reshape(b, t // s, 1, self.dim)
            residual.reshape(b, t // s, s, self.dim)[...] -= q
            quant.reshape(b, t // s, s, self.dim)[...] += q
            codes.append(idx.reshape(b, t // s) if x.ndim == 3 else idx)
        return codes, quant.reshape(x.shape)


def rvq_step_np(latent: np.ndarray, tables: Sequence[tuple[np.ndarray, np.ndarray]],
                strides: Sequence[int] = (4, 2, 1)) -> tuple[list[np.ndarray], np.ndarray]:
    """One-shot :class:`NumpyRvq` call (builds the searchers each time)."""
    return NumpyRvq(tables, strides)(latent)
