"""Draft-and-verify greedy decoding for masked audio spans (no llama_cpp here: `FrozenLM` evaluates).

A drafter guesses the next few tokens; the verifier evaluates ``prompt + out + draft`` in one
batch (`FrozenLM.logits_rows`, one logits row per draft position), keeps the longest draft prefix
whose every token equals the masked argmax of the row before it, then takes the masked argmax at
the first rejected position itself (so every verification pass yields at least one token). The
KV entries of the rejected tail are dropped by the next evaluation (longest-common-prefix reuse).

What is exact: every emitted token is the masked argmax of the logits the model computes for that
position given the emitted tokens before it, i.e. this *is* greedy decoding, and on f32 models
(tiny test GGUFs) it equals plain one-token-at-a-time decoding token for token. On quantised
weights it need not, and not because of the drafts: llama.cpp's CPU matmuls pick their kernel by
the number of tokens in a batch (one-row gemv, 4-row repacked gemm, sgemm), so the same
position's logits differ by up to ~1 logit between a one-token step and a verification batch
(Gemma 3 270M Q4_K_M). Where two masked candidates are that close, plain and draft decoding can
take different sides of the near-tie and then continue differently; both are greedy decodes of
the same model. README "Draft decoding" gives the measured agreement and the margins at the
first divergence (tests/test_draft_gemma.py checks every divergence is such a near-tie).

Drafters (``propose(context, out, k) -> up to k ids`` for the positions after ``out``):

* `AlignedDrafter` — a fixed guess per span position: for denoising, the noisy query's own tokens
  at the same positions (the hope: a clean chunk's codes repeat the noisy chunk's; measured, they
  rarely do with the default pair).
* `NgramDrafter` — prompt lookup: the tokens that followed the most recent earlier occurrence of
  the last n ids (n = max_n .. min_n) in the prompt and the output so far; a match less than k
  ids back is read as a loop and repeated.
* `ChainDrafter` — the first drafter with a non-empty proposal.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

__all__ = ["Drafter", "AlignedDrafter", "NgramDrafter", "ChainDrafter", "draft_greedy", "masked_argmax",
           "span_drafter"]


class Drafter(Protocol):
    def propose(self, context: Sequence[int], out: Sequence[int], k: int) -> list[int]: ...


class AlignedDrafter:
    """Proposes ``tokens[len(out):len(out)+min(k, max_len)]``: one fixed guess per span position."""

    def __init__(self, tokens: Sequence[int], max_len: int | None = None) -> None:
        self.tokens = [int(t) for t in tokens]
        self.max_len = max_len

    def propose(self, context: Sequence[int], out: Sequence[int], k: int) -> list[int]:
        k = k if self.max_len is None else min(k, self.max_len)
        return self.tokens[len(out):len(out) + k]


class NgramDrafter:
    """Prompt-lookup drafts: continue the most recent earlier match of the history's last n ids."""

    def __init__(self, max_n: int = 4, min_n: int = 2) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {min_n}, {max_n}")
        self.max_n, self.min_n = max_n, min_n
        self._ctx_key: tuple[int, int] | None = None
        self._ctx = np.zeros(0, dtype=np.int64)

    def propose(self, context: Sequence[int], out: Sequence[int], k: int) -> list[int]:
        key = (id(context), len(context))
        if key != self._ctx_key:  # the prompt is fixed for a whole span: convert it once
            self._ctx_key, self._ctx = key, np.asarray(context, dtype=np.int64)
        h = np.concatenate([self._ctx, np.asarray(out, dtype=np.int64)])
        for n in range(min(self.max_n, len(h) - 1), self.min_n - 1, -1):
            start = _last_match(h, n)
            if start >= 0:
                return _continuation(h, start + n, k)
        return []


def _continuation(h: np.ndarray, at: int, k: int) -> list[int]:
    """Up to ``k`` ids following a match that ends at ``at``; a match close to the end of ``h``
    has fewer than ``k`` ids after it, and is then read as a period of length ``len(h) - at``
    and repeated (a looping span would otherwise be drafted only one period per pass)."""
    cont = h[at:at + k]
    if len(cont) < k and len(cont) > 0:
        cont = np.resize(cont, k)  # np.resize repeats the array cyclically
    return cont.tolist()


def _last_match(h: np.ndarray, n: int) -> int:
    """Start of the most recent occurrence of ``h[-n:]`` that ends before the last id, or -1."""
    pat = h[-n:]
    cand = np.flatnonzero(h[:len(h) - n] == pat[0])
    for j in range(1, n):
        cand = cand[h[cand + j] == pat[j]]
    return int(cand[-1]) if cand.size else -1


class ChainDrafter:
    """The first non-empty proposal of ``drafters``."""

    def __init__(self, *drafters: Drafter) -> None:
        self.drafters = drafters

    def propose(self, context: Sequence[int], out: Sequence[int], k: int) -> list[int]:
        for d in self.drafters:
            p = d.propose(context, out, k)
            if p:
                return p
        return []


def span_drafter(kind: str, query_span: Sequence[int] | None = None) -> Drafter | None:
    """The drafter named ``kind``: "none", "ngram", "aligned" (needs the query span) or "auto".

    "auto" = n-gram prompt lookup. Measured on the default pair (Gemma 3 270M + default codec,
    README "Draft decoding"), the denoised span almost never repeats the noisy query's token at the
    same position (aligned drafts: ~0 % accepted), while prompt lookup is accepted about half the time."""
    if kind == "none":
        return None
    if kind in ("ngram", "auto"):
        return NgramDrafter()
    if query_span is None:
        raise ValueError(f"draft {kind!r} needs the query's own tokens")
    if kind == "aligned":
        return AlignedDrafter(query_span)
    raise ValueError(f"unknown draft kind {kind!r} (none, ngram, aligned, auto)")


def masked_argmax(logits: np.ndarray, mask: np.ndarray | None) -> int:
    """argmax of ``logits`` (V,) over ``mask`` (lowest id on ties), as `select_token` at temperature 0."""
    if mask is None:
        return int(np.argmax(logits))
    return int(np.argmax(np.where(mask, logits, -np.inf)))


def draft_greedy(lm, prompt: list[int], n_tokens: int, mask_at: Callable[[int], np.ndarray | None],
                 drafter: Drafter, max_draft: int = 8, stops: frozenset[int] = frozenset()) -> list[int]:
    """Greedy decoding of up to ``n_tokens`` ids after ``prompt`` with batched draft verification.

    lm: `runtime.lm.FrozenLM` (its `argmax_rows`: the masked choice of each evaluated row);
    mask_at(step) -> allowed bool mask (V,) or None. Stops early after an id in ``stops``. The
    draft length adapts (`_next_length`): each drafted token costs ~1/5 of a decoding step on a
    CPU, so long drafts only pay while they keep being accepted.
    Counts proposals, acceptances and verification passes in ``lm.stats``."""
    out: list[int] = []
    tok = lm.argmax_rows(prompt, len(prompt) - 1, [mask_at(0)])[0]
    k = min(2, max_draft)
    while True:
        out.append(tok)
        if tok in stops or len(out) >= n_tokens:
            return out
        step = len(out)
        draft = _legal(drafter.propose(prompt, out, min(k, n_tokens - step)), mask_at, step)
        # one mask per evaluated row; the row after a draft that fills the span is never read
        masks = [mask_at(s) if s < n_tokens else None for s in range(step, step + len(draft) + 1)]
        picks = lm.argmax_rows(prompt + out + draft, len(prompt) + step - 1, masks)
        if not draft:
            tok = picks[0]
            continue
        lm.stats.verify_calls += 1
        lm.stats.draft_proposed += len(draft)
        j = 0
        while j < len(draft) and picks[j] == draft[j]:
            out.append(draft[j])
            lm.stats.draft_accepted += 1
            j += 1
            if out[-1] in stops or len(out) >= n_tokens:
                return out
        k = _next_length(k, j, len(draft), max_draft)
        tok = picks[j]


def _next_length(k: int, accepted: int, proposed: int, max_draft: int) -> int:
    """Longer after a fully accepted draft, shorter after a rejection (assisted-generation heuristic)."""
    if accepted == proposed:
        return min(max_draft, k + 2)
    return max(1, k - 1)


def _legal(draft: list[int], mask_at: Callable[[int], np.ndarray | None], step: int) -> list[int]:
    """The draft cut before its first token the step's mask forbids (it could never be accepted)."""
    for i, t in enumerate(draft):
        m = mask_at(step + i)
        if m is not None and not m[t]:
            return draft[:i]
    return list(draft)
