"""Fused cosine nearest-codeword search (Triton) and its pure torch reference.

For queries Q ``(M, D)`` and an L2-normalised codebook C ``(N, D)`` (fp16, bf16 or fp32) the op
returns ``idx[m] = argmax_n <normalize(q_m), c_n>`` (lowest index on ties) and that score, without
ever writing the M x N score matrix: each program tiles its slice of N with ``tl.dot`` (fp32
accumulation) and keeps a running (max, index) per query row.

Two regimes share one kernel:
- small M (streaming: 1-14 queries per group against a 32k x 512 table) is a memory-bound GEMV;
  the codebook is split over N across ~2 programs per SM and a tiny second pass reduces the
  per-split winners, so the whole GPU streams the table;
- large M (offline tokenisation) is a compute-bound GEMM + row-argmax with larger tiles, split
  over N only while there are too few M blocks to fill the GPU.

Queries may be pooled on load (``pool`` consecutive rows averaged), which lets the multi-scale
residual step (``kernels.rvq``) skip a separate average-pool launch.

Define-time note: ``TRITON_INTERPRET=1`` must be set before this module is imported for the CPU
interpreter to be used (the tests do this when no CUDA device exists).
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

NORM_EPS = 1e-12
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
SMALL_M = 64  # at or below: GEMV regime (BLOCK_M 16, fine N split)


def nearest_codeword_reference(queries: torch.Tensor, codebook: torch.Tensor,
                               compute_dtype: torch.dtype = torch.float32,
                               pool: int = 1, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure torch reference: normalise + matmul + argmax, in ``compute_dtype``.

    queries ``(M * pool, D)``, codebook ``(N, D)``. Returns ``idx (M,) int64`` and
    ``score (M,) float32``. Chunked over M so even the reference never holds more than
    ``chunk x N`` scores. With ``compute_dtype`` fp16/bf16 this is "torch at that precision",
    the yardstick of the tolerance rule.
    """
    q_all = _pool_rows(queries, pool)
    c = codebook.to(compute_dtype)
    idx = torch.empty(q_all.shape[0], dtype=torch.int64, device=queries.device)
    score = torch.empty(q_all.shape[0], dtype=torch.float32, device=queries.device)
    for m0 in range(0, q_all.shape[0], chunk):
        q = F.normalize(q_all[m0 : m0 + chunk].to(compute_dtype), dim=-1, eps=NORM_EPS)
        s = q @ c.T
        i = s.argmax(dim=1)  # documented: first maximal index -> lowest index wins
        idx[m0 : m0 + chunk] = i
        score[m0 : m0 + chunk] = s.gather(1, i[:, None]).squeeze(1).float()
    return idx, score


def _pool_rows(x: torch.Tensor, pool: int) -> torch.Tensor:
    if pool == 1:
        return x
    return x.float().reshape(x.shape[0] // pool, pool, x.shape[1]).mean(dim=1)


@triton.jit
def _load_query(q_ptr, rm, rk, m_mask, D, stride_qm, stride_qd, POOL: tl.constexpr):
    """(BLOCK_M, BLOCK_K) fp32 block of the queries, each the mean of POOL consecutive rows."""
    mask = m_mask[:, None] & (rk[None, :] < D)
    ptrs = q_ptr + (rm[:, None] * POOL) * stride_qm + rk[None, :] * stride_qd
    q = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    for j in tl.static_range(1, POOL):
        q += tl.load(ptrs + j * stride_qm, mask=mask, other=0.0).to(tl.float32)
    if POOL > 1:
        q = q * (1.0 / POOL)  # POOL is 2 or 4 in practice: exact, same as avg_pool's sum / POOL
    return q


@triton.jit
def _nearest_kernel(
    q_ptr, c_ptr, part_score_ptr, part_idx_ptr,  # pointers
    M, N, D, n_per_split, num_splits, M_BUCKET,  # sizes (M_BUCKET: autotune key only)
    stride_qm, stride_qd, stride_cn, stride_cd,  # strides
    POOL: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Program (pid_m, pid_s): rows [pid_m*BLOCK_M, +BLOCK_M) against codes of split pid_s.

    Writes the split's winner per row to part_score/part_idx ``(M, num_splits)``; scores are
    already divided by the query norm so splits compare directly.
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = rm < M
    rk = tl.arange(0, BLOCK_K)
    sq = tl.zeros([BLOCK_M], tl.float32)
    for k0 in range(0, D, BLOCK_K):
        q = _load_query(q_ptr, rm, k0 + rk, m_mask, D, stride_qm, stride_qd, POOL)
        sq += tl.sum(q * q, axis=1)
    inv_norm = 1.0 / tl.maximum(tl.sqrt(sq), 1e-12)

    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], tl.int32)
    n_start = pid_s * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    for n0 in range(n_start, n_end, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        n_mask = rn < n_end
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + rk
            # Normalise in fp32 *before* rounding to the table dtype: an unnormalised fp16 query
            # overflows above 65504 and loses small residuals to subnormals.
            q = _load_query(q_ptr, rm, kk, m_mask, D, stride_qm, stride_qd, POOL) * inv_norm[:, None]
            c = tl.load(c_ptr + rn[:, None] * stride_cn + kk[None, :] * stride_cd,
                        mask=n_mask[:, None] & (kk[None, :] < D), other=0.0)
            if UPCAST:  # the interpreter's bf16 tl.dot is wrong: round to bf16, dot in fp32
                acc = tl.dot(q.to(c.dtype).to(tl.float32), tl.trans(c.to(tl.float32)), acc,
                             input_precision="ieee")
            else:
                acc = tl.dot(q.to(c.dtype), tl.trans(c), acc, input_precision=PRECISION)
        acc = tl.where(n_mask[None, :], acc, float("-inf"))
        tile_best, tile_arg = tl.max(acc, axis=1, return_indices=True,
                                     return_indices_tie_break_left=True)
        # Tiles run in increasing n: strict '>' keeps the earlier (lower) index on ties.
        better = tile_best > best
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_arg + n0, best_idx)
    out = rm * num_splits + pid_s
    tl.store(part_score_ptr + out, best, mask=m_mask)
    tl.store(part_idx_ptr + out, best_idx, mask=m_mask)


@triton.jit
def _reduce_splits_kernel(part_score_ptr, part_idx_ptr, idx_ptr, score_ptr, M, num_splits,
                          BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr):
    """Winner over splits per row (splits are in increasing n, so leftmost = lowest index)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rs = tl.arange(0, BLOCK_S)
    m_mask = rm < M
    offs = rm[:, None] * num_splits + rs[None, :]
    s = tl.load(part_score_ptr + offs, mask=m_mask[:, None] & (rs[None, :] < num_splits),
                other=float("-inf"))
    best, arg = tl.max(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
    i = tl.load(part_idx_ptr + rm * num_splits + arg, mask=m_mask, other=0)
    tl.store(idx_ptr + rm, i.to(tl.int64), mask=m_mask)
    tl.store(score_ptr + rm, best, mask=m_mask)


def _configs(tiles: list[tuple[int, int, int, int]], stages: list[int]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w in tiles for s in stages]


# Small M: the codebook tile is the only real traffic; vary its shape and the pipelining depth.
_SMALL_FULL = _configs([(16, bn, bk, w) for bn in (64, 128) for bk in (64, 128) for w in (4, 8)], [2, 3, 4])
# Large M: classic GEMM tiles (BLOCK_N <= 256 = the split granule below).
_LARGE_FULL = _configs([(bm, bn, bk, 8 if bm * bn >= 128 * 256 else 4)
                        for bm, bn in ((64, 128), (64, 256), (128, 64), (128, 128), (128, 256))
                        for bk in (32, 64)], [3, 4])
# A cold autotune of the full spaces costs ~1 s of compilation per config and key: tests and the
# prepared GPU check (`make gpu-check`, LLMCODEC_AUTOTUNE=quick) use two configs each, both valid for
# every shape (correctness does not depend on the tile), so a cold Triton cache stays within minutes.
_SMALL_QUICK = _configs([(16, 128, 64, 4), (16, 64, 128, 4)], [3])
_LARGE_QUICK = _configs([(128, 128, 64, 8), (64, 256, 32, 8)], [3])
AUTOTUNE = os.environ.get("LLMCODEC_AUTOTUNE", "full")
if AUTOTUNE not in ("full", "quick"):
    raise ValueError(f"LLMCODEC_AUTOTUNE={AUTOTUNE!r}: use full or quick")
_SMALL_CONFIGS = _SMALL_QUICK if AUTOTUNE == "quick" else _SMALL_FULL
_LARGE_CONFIGS = _LARGE_QUICK if AUTOTUNE == "quick" else _LARGE_FULL
_KEY = ["M_BUCKET", "N", "D", "POOL", "PRECISION"]
_nearest_small = triton.autotune(configs=_SMALL_CONFIGS, key=_KEY)(_nearest_kernel)
_nearest_large = triton.autotune(configs=_LARGE_CONFIGS, key=_KEY)(_nearest_kernel)
# Under the CPU interpreter autotuning would time every config: use one small config instead.
_INTERPRET_META = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def plan_splits(m: int, n: int, device: torch.device) -> tuple[int, int]:
    """``(n_per_split, num_splits)``: enough programs (~2 per SM) to stream the codebook.

    The split length is a multiple of the largest BLOCK_N so tiles never straddle splits.
    """
    small = m <= SMALL_M
    granule = _INTERPRET_META["BLOCK_N"] if INTERPRET else (128 if small else 256)
    min_block_m = 16 if (small or INTERPRET) else 64
    sms = _num_sms(device.index or 0) if device.type == "cuda" else 4
    want = max(1, _cdiv(2 * sms, _cdiv(m, min_block_m)))
    n_per_split = _cdiv(_cdiv(n, want), granule) * granule
    return n_per_split, _cdiv(n, n_per_split)


def nearest_codeword_triton(queries: torch.Tensor, codebook: torch.Tensor, *, pool: int = 1,
                            num_splits: int | None = None,
                            allow_tf32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused cosine nearest codeword.

    queries ``(M * pool, D)`` any float dtype (normalised in fp32, then cast to the codebook dtype
    for the dot); codebook ``(N, D)`` fp16/bf16/fp32, L2-normalised. ``pool > 1`` averages each run of
    ``pool`` consecutive query rows first. ``num_splits`` overrides the N split (tests);
    ``allow_tf32`` lets fp32 use TF32 tensor cores (off: fp32 must match torch fp32).
    Returns ``idx (M,) int64``, ``score (M,) float32`` on the queries' device.
    """
    _check_inputs(queries, codebook, pool)
    m, n, d = queries.shape[0] // pool, codebook.shape[0], codebook.shape[1]
    idx = torch.empty(m, dtype=torch.int64, device=queries.device)
    score = torch.empty(m, dtype=torch.float32, device=queries.device)
    if m == 0:
        return idx, score
    n_per_split, splits = plan_splits(m, n, queries.device)
    if num_splits is not None:
        n_per_split = _cdiv(n, max(1, num_splits))
        splits = _cdiv(n, n_per_split)
    part_score = torch.empty((m, splits), dtype=torch.float32, device=queries.device)
    part_idx = torch.empty((m, splits), dtype=torch.int32, device=queries.device)
    # Only fp32 inputs read the precision: IEEE keeps them comparable to torch fp32 (no TF32).
    precision = "ieee" if (codebook.dtype == torch.float32 and not allow_tf32) else "tf32"
    args = (queries, codebook, part_score, part_idx, m, n, d, n_per_split, splits,
            triton.next_power_of_2(min(m, 4096)), queries.stride(0), queries.stride(1),
            codebook.stride(0), codebook.stride(1))
    if INTERPRET:
        grid = (triton.cdiv(m, _INTERPRET_META["BLOCK_M"]), splits)
        _nearest_kernel[grid](*args, POOL=pool, PRECISION=precision,
                              UPCAST=codebook.dtype == torch.bfloat16, **_INTERPRET_META)
    else:
        kernel = _nearest_small if m <= SMALL_M else _nearest_large
        kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), splits)](
            *args, POOL=pool, PRECISION=precision, UPCAST=False)
    block_m = 16
    _reduce_splits_kernel[(triton.cdiv(m, block_m),)](
        part_score, part_idx, idx, score, m, splits,
        BLOCK_M=block_m, BLOCK_S=max(2, triton.next_power_of_2(splits)))
    return idx, score


def _check_inputs(queries: torch.Tensor, codebook: torch.Tensor, pool: int) -> None:
    if queries.ndim != 2 or codebook.ndim != 2:
        raise ValueError(f"queries {tuple(queries.shape)} and codebook {tuple(codebook.shape)} must be 2-D")
    if queries.shape[1] != codebook.shape[1]:
        raise ValueError(f"queries have D={queries.shape[1]} but the codebook has D={codebook.shape[1]}")
    if codebook.shape[0] == 0 or codebook.shape[1] == 0:
        raise ValueError(f"codebook must be non-empty, got shape {tuple(codebook.shape)}")
    if codebook.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"codebook dtype must be fp16, bf16 or fp32, got {codebook.dtype}")
    if not queries.is_floating_point():
        raise ValueError(f"queries must be floating point, got {queries.dtype}")
    if pool < 1 or queries.shape[0] % pool:
        raise ValueError(f"{queries.shape[0]} query rows are not a whole number of pool={pool} windows")
    if queries.device != codebook.device:
        raise ValueError(f"queries on {queries.device} but codebook on {codebook.device}")
    if queries.device.type != "cuda" and not INTERPRET:
        raise RuntimeError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                           "importing kernels.nearest); use backend='numpy' or 'torch' on the CPU")
