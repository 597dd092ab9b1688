"""The pure references of the residual VQ, numpy float64, torch-free: the one statement of the rule.

Layer ``l`` (stride ``s_l``) mean-pools the residual over non-overlapping groups of ``s_l`` frames
aligned to frame 0, takes the codeword with the highest cosine score against the L2-normalised table
(lowest index on exact ties), subtracts the *unnormalised* row held for ``s_l`` frames, and passes the
rest on (official-llm-codec.md §3). The fast paths (``kernels.cpu`` numpy/BLAS, ``kernels.rvq`` Triton,
``codec.quantizer`` torch) are tested against :func:`rvq_reference`; export's own gate
(``export.verify``) and the tests compare codes with :func:`code_mismatches`, the one near-tie rule.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Tables = Sequence[tuple[np.ndarray, np.ndarray]]


def top2_gap(queries: np.ndarray, normed: np.ndarray) -> np.ndarray:
    """Best minus second-best cosine score per query ``(M,)``: how close each search was to a tie."""
    q = np.asarray(queries, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    scores = q @ np.asarray(normed, dtype=np.float64).T
    part = -np.partition(-scores, 1, axis=1)[:, :2]
    return (part[:, 0] - part[:, 1]).astype(np.float32)


def rvq_reference(latent: np.ndarray, tables: Tables,
                  strides: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Quantise ``latent (T, D)`` (T a multiple of ``strides[0]``) in float64.

    tables: per layer ``(rows (N_l, D), normed (N_l, D))``. Returns codes per layer ``(T / s_l,)`` int64,
    the top-2 score gaps of each search ``(T / s_l,)`` and the quantised latent ``(T, D)`` float64.
    """
    residual = np.asarray(latent, dtype=np.float64).copy()
    t, d = residual.shape
    codes, gaps = [], []
    for (rows, normed), s in zip(tables, strides):
        pooled = residual.reshape(t // s, s, d).mean(axis=1)
        q = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        idx = np.argmax(q @ np.asarray(normed, dtype=np.float64).T, axis=1)
        residual -= np.repeat(np.asarray(rows, dtype=np.float64)[idx], s, axis=0)
        codes.append(idx.astype(np.int64))
        gaps.append(top2_gap(pooled, normed))
    return codes, gaps, np.asarray(latent, dtype=np.float64) - residual


def dequantize(codes: Sequence[np.ndarray], rows: Sequence[np.ndarray], strides: Sequence[int]) -> np.ndarray:
    """Summed quantised latent ``(T, D)`` float32 from codes per layer (the decoder graph's input, transposed)."""
    total = None
    for c, r, s in zip(codes, rows, strides):
        q = np.repeat(r[np.asarray(c, dtype=np.int64)], s, axis=0)
        total = q if total is None else total + q
    return np.asarray(total, dtype=np.float32)


def code_mismatches(ref: list[np.ndarray], test: list[np.ndarray], gaps: list[np.ndarray],
                    strides: Sequence[int], eps: float) -> dict[str, int]:
    """The near-tie rule: compare codes layer by layer per group; a mismatch where the reference's
    best two scores are closer than ``eps`` is excused (two backends' rounding), and the group's later
    layers are skipped (their residual legitimately differs). Counts ``total``, ``mismatch``,
    ``near_tie`` and ``hard`` (unexcused) codes."""
    out = {"total": 0, "mismatch": 0, "near_tie": 0, "hard": 0}
    if [len(c) for c in ref] != [len(c) for c in test]:
        out.update(hard=1, total=sum(len(c) for c in ref))
        return out
    for g in range(len(ref[0])):
        for r, t, gap, s in zip(ref, test, gaps, strides):
            n = strides[0] // s
            sl = slice(g * n, (g + 1) * n)
            diff = np.asarray(r[sl]) != np.asarray(t[sl])
            out["total"] += n
            if not diff.any():
                continue
            out["mismatch"] += int(diff.sum())
            excused = bool((np.asarray(gap[sl])[diff] < eps).all())
            out["near_tie" if excused else "hard"] += int(diff.sum())
            break
    return out
