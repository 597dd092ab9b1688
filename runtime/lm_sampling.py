"""Token selection for the few-shot engine: allowed-token masks, greedy / top-k / top-p choice, log-softmax.

Pure numpy over one logits row, independent of llama.cpp, so `FrozenLM.generate`, the draft
verifier (`runtime.draft`) and the benchmarks share one definition of "the next token". A decode
step's allowed set (`Allowed`) keeps audio spans inside a codebook: disallowed logits become -inf
before the choice. `runtime.lm` re-exports `select_token` and `log_softmax`.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np

__all__ = ["AllowedStep", "Allowed", "log_softmax", "step_mask", "select_token"]

# A per-step allowed set: bool mask (V,) or int index array; or a callable / list giving one per step.
AllowedStep = np.ndarray
Allowed = Union[None, AllowedStep, Sequence[AllowedStep], Callable[[int], AllowedStep]]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def step_mask(allowed: Allowed, step: int, n_vocab: int) -> np.ndarray | None:
    """The bool mask (n_vocab,) of ids allowed at decode step ``step``, or None (any id).

    allowed: None, one 1-D mask/index array for every step, a per-step list (or 2-D (steps, V)
    table), or a callable ``step -> mask/index array``. Raises ValueError for a wrong-shaped mask,
    a missing step or an empty set."""
    if allowed is None:
        return None
    if callable(allowed):
        a = allowed(step)
    elif isinstance(allowed, np.ndarray) and allowed.ndim == 1:
        a = allowed  # the same set at every step
    else:
        if step >= len(allowed):
            raise ValueError(f"allowed has {len(allowed)} per-step entries; step {step} has none")
        a = allowed[step]
    a = np.asarray(a)
    if a.dtype == bool:
        if a.shape != (n_vocab,):
            raise ValueError(f"allowed mask must have shape ({n_vocab},), got {a.shape}")
        mask = a
    else:
        mask = np.zeros(n_vocab, dtype=bool)
        mask[a.astype(np.int64)] = True
    if not mask.any():
        raise ValueError(f"allowed set at step {step} is empty")
    return mask


def select_token(logits: np.ndarray, mask: np.ndarray | None, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, rng: np.random.Generator | None = None) -> int:
    """Greedy (temperature 0) or top-k / top-p sampling over logits (V,) restricted to ``mask``."""
    x = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    if temperature <= 0.0:
        return int(np.argmax(x))
    x = x / temperature
    if top_k > 0:
        kth = np.partition(x, -top_k)[-top_k] if top_k < x.size else -np.inf
        x = np.where(x >= kth, x, -np.inf)
    p = np.exp(x - np.max(x))
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p  # smallest set whose mass reaches top_p
        q = np.zeros_like(p)
        q[order[keep]] = p[order[keep]]
        p = q / q.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(p.size, p=p))
