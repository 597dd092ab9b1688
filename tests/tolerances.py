"""The project's ONE table of parity tolerances (house style §6: a ladder with tolerances in one table).

Import from tests as ``from tolerances import TOLERANCES, Tol, ...`` (pytest puts ``tests/`` on
sys.path). Add a row per comparison, named ``<what>_<candidate>_vs_<reference>``; say in ``note``
why the number is what it is. Rules:

- Values (scores, latents): ``max|x - ref| <= ref_factor * max|x_torch - ref| + atol + rtol * max|ref|``
  where ``x_torch`` is torch itself at the candidate's precision (the Triton-tutorial rule "at most
  twice as far from the fp32 reference as torch at that precision, plus a dtype atol");
  ``ref_factor=None`` drops that term (the candidate is held to atol/rtol alone).
- Code indices: equal, except at near-ties: a mismatch is allowed only where the two best reference
  scores differ by less than ``tie_eps`` *and* the chosen code scores within ``tie_eps`` of the best;
  the near-tie mismatch rate is returned so tests can report it, and must stay <= ``max_tie_rate``.
- Audio: ``min_snr_db`` (SNR of candidate vs reference, dB).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tol:
    atol: float = 0.0
    rtol: float = 0.0
    ref_factor: float | None = None
    tie_eps: float | None = None
    max_tie_rate: float = 0.0
    min_snr_db: float | None = None
    note: str = ""


TOLERANCES: dict[str, Tol] = {
    # --- kernels/ (issue 4): cosine nearest codeword, scores in [-1, 1] --------------------------
    "nearest_numpy_f32_vs_ref": Tol(
        atol=5e-6, tie_eps=1e-5, max_tie_rate=0.01,
        note="float32 BLAS in blocks vs one fp32 matmul: only the summation order differs"),
    "nearest_triton_f32_vs_ref": Tol(
        ref_factor=2.0, atol=5e-6, tie_eps=1e-5, max_tie_rate=0.01,
        note="IEEE fp32 tl.dot (TF32 off), fp32 accumulation; torch fp32 is the reference itself"),
    "nearest_triton_f16_vs_ref": Tol(
        ref_factor=2.0, atol=2e-4, tie_eps=1e-3, max_tie_rate=0.05,
        note="queries rounded to fp16 (2^-11 relative) before an fp32-accumulated dot: "
             "|err| <= 2^-11 * sum|q c| <= 4.9e-4 bounds the index flips"),
    "nearest_triton_bf16_vs_ref": Tol(
        ref_factor=2.0, atol=2e-3, tie_eps=1.6e-2, max_tie_rate=0.2,
        note="bf16 query rounding (2^-8; the CPU interpreter truncates: 2^-7)"),
    "rvq_numpy_vs_ref": Tol(
        atol=1e-5, rtol=1e-6, tie_eps=1e-5, max_tie_rate=0.01,
        note="float32 pooling/subtraction order differs from torch avg_pool1d by a few ulps"),
    "rvq_triton_f32_vs_ref": Tol(
        atol=1e-5, rtol=1e-6, tie_eps=1e-5, max_tie_rate=0.01,
        note="fp32 tables; quantised latent compared only where all codes agree"),
    # --- export/ + runtime/ (issue 3): the codec graphs, compared on the golden pairs -----------
    "latent_torch_stream_vs_torch_offline": Tol(
        min_snr_db=80.0,
        note="the same fp32 convs over different chunk shapes (1, 2, 3, 4 frames): only summation "
             "order differs (measured >= 120 dB on the tiny model)"),
    "codec_ort_cpu_vs_torch": Tol(
        min_snr_db=60.0, tie_eps=1e-4, max_tie_rate=0.01,
        note="ORT CPU vs torch eager, every step/offline output and state (measured >= 120 dB); "
             "export.verify.ORT_MIN_SNR_DB / NEAR_TIE_EPS must equal these (the export's own gate)"),
    "audio_runtime_stream_vs_runtime_offline": Tol(
        min_snr_db=60.0,
        note="the runtime's chunked step graphs (4/8-frame mix) vs its offline graph on real speech"),
    "codec_trt_fp32_vs_torch": Tol(
        min_snr_db=50.0,
        note="TensorRT fp32 engines (TF32 allowed by default) vs torch on the golden pairs; "
             "export.tensorrt.TRT_FP32_MIN_SNR_DB must equal it"),
    "codec_trt_fp16_vs_torch": Tol(
        min_snr_db=None,
        note="reported only: fp16 engines with reductions/softmax/normalisation/unary ops pinned to fp32"),
}


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float()
    return np.asarray(x, dtype=np.float64)


def value_bound(tol: Tol, ref: Any, lowp: Any | None = None) -> float:
    """The largest allowed ``max|x - ref|`` under ``tol`` (see module docstring)."""
    ref_np = _np(ref)
    bound = tol.atol + tol.rtol * float(np.abs(ref_np).max(initial=0.0))
    if tol.ref_factor is not None:
        if lowp is None:
            raise ValueError("this tolerance row needs torch's own low-precision result (lowp)")
        bound += tol.ref_factor * float(np.abs(_np(lowp) - ref_np).max(initial=0.0))
    return bound


def assert_values_close(x: Any, ref: Any, tol: Tol, lowp: Any | None = None, what: str = "values") -> float:
    """Assert the value rule; returns the max error (for reporting)."""
    err = float(np.abs(_np(x) - _np(ref)).max(initial=0.0))
    bound = value_bound(tol, ref, lowp)
    assert err <= bound, f"{what}: max |x - ref| = {err:.3g} > allowed {bound:.3g} ({tol.note})"
    return err


def check_codes(idx: Any, ref_scores: Any, tol: Tol, what: str = "codes") -> float:
    """Check indices against the full reference score matrix ``ref_scores (M, N)``.

    The reference winner is the lowest index of the row maximum. Returns the near-tie mismatch
    rate; raises AssertionError on any mismatch that is not a near-tie or when the rate exceeds
    ``tol.max_tie_rate``.
    """
    s = _np(ref_scores)
    got = np.asarray(idx.detach().cpu() if hasattr(idx, "detach") else idx).astype(np.int64).ravel()
    want = s.argmax(axis=1)
    rows = np.arange(s.shape[0])
    best = s[rows, want]
    top2 = np.partition(s, -2, axis=1)[:, -2] if s.shape[1] > 1 else np.full_like(best, -np.inf)
    eps = tol.tie_eps or 0.0
    bad_range = (got < 0) | (got >= s.shape[1])
    assert not bad_range.any(), f"{what}: indices out of range at rows {np.flatnonzero(bad_range)[:5]}"
    mismatch = got != want
    near_tie = (best - top2 < eps) & (best - s[rows, got] < eps)
    hard = mismatch & ~near_tie
    assert not hard.any(), (f"{what}: {hard.sum()} of {len(got)} indices differ outside a near-tie "
                            f"(eps {eps:g}), first rows {np.flatnonzero(hard)[:5]}")
    rate = float(mismatch.mean()) if len(got) else 0.0
    assert rate <= tol.max_tie_rate, f"{what}: near-tie mismatch rate {rate:.3%} > {tol.max_tie_rate:.3%}"
    return rate
