"""Several masked greedy spans decoded together: one KV sequence each, one ``llama_decode`` per round.

Denoising decodes one span per chunk, and every chunk's prompt is the same cached demonstration
prefix followed by that chunk's query. On a CPU a one-token step costs ~3x a token inside a
large batch (Gemma 3 270M, 2 threads: 7.7 ms alone, 2.5 ms/token in a 67-token prefill), so
decoding B spans side by side turns B one-token steps into one B-token batch. Each span runs in
its own KV sequence that shares the prefix's cells (a unified cache: copying a sequence only tags
cells), and follows exactly `runtime.draft.draft_greedy`'s rule: per round it sends its pending
token plus its draft, keeps the longest accepted prefix, drops the rejected tail's cells.

What is exact: every emitted token is the masked argmax of the logits the model computes for that
position after the tokens before it in its own sequence, i.e. greedy decoding of each prompt. On
f32 models the spans equal one-at-a-time `FrozenLM.generate` token for token; on quantised
weights the batch composition picks other matmul kernels, the near-tie caveat of `runtime.draft`.
Functions over a `FrozenLM` (like `runtime.lm_scoring`); no llama_cpp import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from runtime.draft import Drafter, _legal, _next_length

if TYPE_CHECKING:
    from runtime.lm import FrozenLM

__all__ = ["generate_many", "shared_prefix"]

MaskAt = Callable[[int], "np.ndarray | None"]


@dataclass
class _Span:
    """One span's decoding state; its tokens live in KV sequence ``seq``."""

    seq: int
    prompt: list[int]
    drafter: Drafter | None
    k: int
    out: list[int] = field(default_factory=list)
    tok: int = -1          # the chosen token not yet evaluated
    draft: list[int] = field(default_factory=list)
    done: bool = False


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``prompts``, leaving each at least one own token."""
    n = min(len(p) for p in prompts) - 1
    first = np.asarray(prompts[0][:n])
    for p in prompts[1:]:
        diff = np.flatnonzero(np.asarray(p[:n]) != first[:n])
        if diff.size:
            n = int(diff[0])
    return max(n, 0)


def generate_many(lm: FrozenLM, prompts: Sequence[Sequence[int]], n_tokens: int, mask_at: MaskAt,
                  drafters: Sequence[Drafter | None], max_draft: int = 8) -> list[list[int]]:
    """Masked greedy spans of ``n_tokens`` ids after each prompt, decoded side by side.

    prompts: B id lists (usually one cached prefix + a query each); mask_at(step) -> the allowed
    bool mask (V,) at span step ``step`` (the same schedule for every span, checked by the
    caller); drafters[i]: span i's drafter, or None for plain greedy. Needs B + 1 <= n_seq_max
    and the prefix + every span's cells within n_ctx (`FrozenLM.generate_many` splits into
    groups that fit). Returns B lists of n_tokens ids. Counts into ``lm.stats`` as
    `draft_greedy` does."""
    P = shared_prefix(prompts)
    lm.hold(list(prompts[0][:P]))
    lc, mem = lm._lc, lm._memory()
    spans = [_Span(s, [int(t) for t in p], d, min(2, max_draft))
             for s, (p, d) in enumerate(zip(prompts, drafters), start=1)]
    for sp in spans:
        lc.llama_memory_seq_cp(mem, 0, sp.seq, 0, P)
    lm.stats.reused_tokens += P * len(spans)
    try:
        for sp in spans:  # each query alone: its prefill batch is the one-at-a-time path's
            sp.tok = _round(lm, [(sp, P, sp.prompt[P:], [mask_at(0)])])[0][0]
        while True:
            requests = []
            for sp in spans:
                _advance(sp, n_tokens, mask_at, max_draft)
                if not sp.done:
                    step = len(sp.out)
                    masks = [mask_at(s) if s < n_tokens else None for s in range(step, step + len(sp.draft) + 1)]
                    requests.append((sp, len(sp.prompt) + step - 1, [sp.out[-1], *sp.draft], masks))
            if not requests:
                return [sp.out for sp in spans]
            for (sp, _, _, _), pk in zip(requests, _round(lm, requests)):
                _accept(lm, sp, pk, n_tokens, max_draft)
                lc.llama_memory_seq_rm(mem, sp.seq, len(sp.prompt) + len(sp.out), -1)
    finally:
        for sp in spans:
            lc.llama_memory_seq_rm(mem, sp.seq, -1, -1)


def _advance(sp: _Span, n_tokens: int, mask_at: MaskAt, max_draft: int) -> None:
    """Emit the pending token; then the span is done or proposes its next draft."""
    if sp.done:
        return
    sp.out.append(sp.tok)
    if len(sp.out) >= n_tokens:
        sp.done = True
        return
    step = len(sp.out)
    sp.draft = [] if sp.drafter is None else _legal(sp.drafter.propose(sp.prompt, sp.out, min(sp.k, n_tokens - step)),
                                                    mask_at, step)


def _accept(lm: FrozenLM, sp: _Span, picks: list[int], n_tokens: int, max_draft: int) -> None:
    """Keep the draft's longest prefix equal to the picks; the pick after it is the next token."""
    if not sp.draft:
        sp.tok = picks[0]
        return
    lm.stats.verify_calls += 1
    lm.stats.draft_proposed += len(sp.draft)
    j = 0
    while j < len(sp.draft) and picks[j] == sp.draft[j] and len(sp.out) < n_tokens:
        sp.out.append(sp.draft[j])
        lm.stats.draft_accepted += 1
        j += 1
    if len(sp.out) >= n_tokens:
        sp.done = True
        return
    sp.k = _next_length(sp.k, j, len(sp.draft), max_draft)
    sp.tok = picks[j]


def _round(lm: FrozenLM, requests: list) -> list[list[int]]:
    """Evaluate every request (span, first position, tokens, masks of the last len(masks) tokens)
    in as few ``llama_decode`` calls as the batch allows; returns each request's picks."""
    flat = []  # (request index, token, position, seq, mask or no row)
    for r, (sp, pos0, toks, masks) in enumerate(requests):
        first_row = len(toks) - len(masks)
        for i, t in enumerate(toks):
            flat.append((r, t, pos0 + i, sp.seq, i >= first_row, masks[i - first_row] if i >= first_row else None))
    picks: list[list[int]] = [[] for _ in requests]
    cap = lm._batch_cap
    for a in range(0, len(flat), cap):
        part = flat[a:a + cap]
        lm._decode([e[1] for e in part], [e[2] for e in part], [e[3] for e in part], [e[4] for e in part])
        lm.stats.eval_calls += 1
        lm.stats.evaluated_tokens += len(part)
        for i, e in enumerate(part):
            if e[4]:
                picks[e[0]].append(lm._chooser.pick(lm._raw_row(i), e[5]))
    return picks
