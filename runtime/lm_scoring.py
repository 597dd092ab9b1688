"""Label scoring for the few-shot engine: log P(candidate | prompt) for candidate continuations.

Classification scores every label's token ids after one prompt. The prompt is evaluated once
(its KV cache is kept); the candidates then run either batched, each in its own KV sequence
sharing the prompt's cells (one ``llama_decode`` per group that fits n_batch tokens and
n_seq_max - 1 sequences), or one cached step after another. Split from `runtime.lm` as functions
over a `FrozenLM`, whose `label_logprobs` and `score` methods call them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from runtime.lm_sampling import log_softmax

if TYPE_CHECKING:
    from runtime.lm import FrozenLM

__all__ = ["label_logprobs", "label_groups", "score_group"]


def label_logprobs(lm: FrozenLM, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]],
                   batched: bool = True) -> np.ndarray:
    """log P(candidate | prompt) for each candidate continuation: (C,) float64 (`FrozenLM.label_logprobs`).

    The prompt is evaluated once (its KV cache is kept). ``batched``: every candidate gets its
    own KV sequence sharing the prompt's cells, and all of them are scored in one
    ``llama_decode`` (more only past n_batch tokens or n_seq_max - 1 candidates); otherwise
    each further candidate token is one cached step, one candidate after the other. The two
    agree to ~1e-5 on f32 models; on Q4_K weights to the kernel noise of the `FrozenLM` docstring.
    """
    prompt = [int(i) for i in prompt_ids]
    cands = [[int(t) for t in c] for c in candidates]
    for ci, cand in enumerate(cands):
        if not cand:
            raise ValueError(f"candidate {ci} is empty")
        lm._check_ids(cand)
    lm._check_fits(len(prompt) + max((len(c) for c in cands), default=0), "prompt + candidate")
    first = log_softmax(lm.logits(prompt))
    out = np.array([first[c[0]] for c in cands], dtype=np.float64)
    longer = [ci for ci, c in enumerate(cands) if len(c) > 1]
    if batched and lm.n_seq_max > 1 and len(prompt) > 1:
        for group in label_groups(longer, cands, lm._batch_cap, lm.n_seq_max):
            score_group(lm, prompt, cands, group, out)
        return out
    for ci in longer:
        cand = cands[ci]
        for j in range(1, len(cand)):
            out[ci] += log_softmax(lm._eval_to(prompt + cand[:j]))[cand[j]]
    return out


def label_groups(idx: list[int], cands: list[list[int]], batch_cap: int, n_seq_max: int) -> list[list[int]]:
    """Candidates ``idx`` split so a group fits one batch (``batch_cap`` tokens, n_seq_max - 1 sequences)."""
    groups: list[list[int]] = [[]]
    used = 0
    for ci in idx:
        n = len(cands[ci]) - 1  # all but the candidate's last token
        if groups[-1] and (used + n > batch_cap or len(groups[-1]) >= n_seq_max - 1):
            groups.append([])
            used = 0
        groups[-1].append(ci)
        used += n
    return [g for g in groups if g]


def score_group(lm: FrozenLM, prompt: list[int], cands: list[list[int]], group: list[int], out: np.ndarray) -> None:
    """Add to ``out`` the log-probabilities of ``group``'s candidates after their first token, in one
    decode: candidate i runs in KV sequence i+1, which shares the prompt's cells (a unified cache:
    copying a sequence only tags cells). The prompt must be cached in sequence 0."""
    lc, mem, P = lm._lc, lm._memory(), len(prompt)
    toks: list[int] = []
    pos: list[int] = []
    seqs: list = []
    rows_of: list = []
    for s, ci in enumerate(group, start=1):
        lc.llama_memory_seq_cp(mem, 0, s, 0, P)
        body = cands[ci][:-1]
        rows_of.append(range(len(toks), len(toks) + len(body)))
        toks += body
        pos += range(P, P + len(body))
        seqs += [s] * len(body)
    try:
        lm._decode(toks, pos, seqs, [True] * len(toks))
        for ci, rows in zip(group, rows_of):
            for j, r in enumerate(rows, start=1):
                out[ci] += log_softmax(lm._row(r))[cands[ci][j]]
    finally:
        for s in range(1, len(group) + 1):
            lc.llama_memory_seq_rm(mem, s, -1, -1)
    lm.stats.evaluated_tokens += len(toks)
    lm.stats.eval_calls += 1
