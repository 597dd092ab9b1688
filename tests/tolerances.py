"""Checking helpers over the project's one tolerance table (``kernels/tolerances.py``).

Import from tests as ``from tolerances import TOLERANCES, Tol, ...`` (pytest puts ``tests/`` on
sys.path); the rules are stated in ``kernels/tolerances.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kernels.tolerances import TOLERANCES, Tol  # noqa: F401  (re-exported for the tests)


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
