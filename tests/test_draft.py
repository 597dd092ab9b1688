"""Draft-and-verify greedy decoding == plain masked greedy decoding, on tiny f32 LLaMA GGUFs (real llama.cpp).

On f32 weights llama.cpp's batched and one-token evaluations agree to ~1e-5, so the outputs must
be identical token for token, whatever the drafts: perfect, useless, partly wrong, crossing
layer-mask boundaries, or full of EOS / ids 0-2 (which are ordinary audio tokens).
"""
from __future__ import annotations

import numpy as np
import pytest

from fixtures_llm import EOS_ID, eos_gguf, make_lm, tiny_gguf  # noqa: F401

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
from runtime.draft import (AlignedDrafter, ChainDrafter, NgramDrafter, masked_argmax,  # noqa: E402
                           span_drafter)

V = 32000
RNG = np.random.default_rng(99)
PROMPT = [1] + RNG.integers(3, V, 120).tolist()


def _layer_schedule_masks(n_groups: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-step masks of a layer-major span: layer 1 = a 3,000-id word table, layers 2-3 = every id."""
    words = np.zeros(V, dtype=bool)
    words[rng.choice(np.arange(3, V), 3000, replace=False)] = True
    full = np.ones(V, dtype=bool)
    return [words] * n_groups + [full] * (6 * n_groups)


class _Junk:
    """Drafts that are almost never right (random ids)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def propose(self, context, out, k):
        return self.rng.integers(0, V, k).tolist()


class _Corrupted(AlignedDrafter):
    """The true continuation with every ``every``-th position wrong: partial acceptances."""

    def __init__(self, tokens, every: int) -> None:
        super().__init__([t if i % every else (t + 1) % V for i, t in enumerate(tokens)])


def _drafters(ref: list[int]):
    return {"oracle": AlignedDrafter(ref), "junk": _Junk(0), "corrupt3": _Corrupted(ref, 3),
            "ngram": NgramDrafter(), "chain": ChainDrafter(NgramDrafter(max_n=3), AlignedDrafter(ref[::-1]))}


@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_draft_equals_plain_greedy_under_layer_masks(tiny_gguf, make_lm, kv_type):
    lm = make_lm(tiny_gguf, kv_type=kv_type)
    masks = _layer_schedule_masks(4, np.random.default_rng(1))
    ref = lm.generate(PROMPT, len(masks), allowed=masks)
    assert all(masks[i][t] for i, t in enumerate(ref))
    for name, drafter in _drafters(ref).items():
        for k in (1, 3, 8, 40):
            got = lm.generate(PROMPT, len(masks), allowed=masks, drafter=drafter, max_draft=k)
            assert got == ref, (name, k)


def test_oracle_drafts_are_all_accepted_in_few_passes(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf, kv_type="f32")
    masks = _layer_schedule_masks(4, np.random.default_rng(2))
    ref = lm.generate(PROMPT, len(masks), allowed=masks)
    lm.stats.draft_proposed = lm.stats.draft_accepted = lm.stats.verify_calls = 0
    assert lm.generate(PROMPT, len(masks), allowed=masks, drafter=AlignedDrafter(ref), max_draft=8) == ref
    assert lm.stats.acceptance_rate == 1.0
    # One token from the prompt's logits, then per pass its drafts (2, 4, 6, 8, ... while all are
    # accepted; the last cut to what is left) and the token after them.
    assert len(ref) == 1 + 2 + 1 + 4 + 1 + 6 + 1 + 8 + 1 + 3 and lm.stats.verify_calls == 5


def test_random_masks_and_junk_drafts(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf, kv_type="f32")
    rng = np.random.default_rng(5)
    masks = []
    for _ in range(30):
        m = np.zeros(V, dtype=bool)
        m[rng.choice(V, size=int(rng.integers(1, 50)), replace=False)] = True
        masks.append(m)
    ref = lm.generate(PROMPT[:40], 30, allowed=masks)
    # Drafts drawn from the masks (legal, mostly wrong) and illegal drafts (cut before verification).
    legal = AlignedDrafter([int(rng.choice(np.flatnonzero(m))) for m in masks])
    for drafter in (legal, _Junk(1), AlignedDrafter(ref)):
        assert lm.generate(PROMPT[:40], 30, allowed=masks, drafter=drafter) == ref


def test_eos_and_ids_0_2_inside_spans(eos_gguf, make_lm):
    lm = make_lm(eos_gguf, kv_type="f32")
    audio = np.zeros(V, dtype=bool)
    audio[[0, 1, 2, 500, 900]] = True
    no_eos = audio.copy()
    no_eos[EOS_ID] = False
    masks = [audio, no_eos] * 10  # EOS wins where allowed; the runner-up elsewhere
    ref = lm.generate(PROMPT[:10], 20, allowed=masks)
    assert ref[0::2] == [EOS_ID] * 10 and EOS_ID not in ref[1::2]
    for drafter in (AlignedDrafter(ref), AlignedDrafter([EOS_ID] * 20), AlignedDrafter([0, 1, 2] * 7), NgramDrafter()):
        assert lm.generate(PROMPT[:10], 20, allowed=masks, drafter=drafter) == ref
    # EOS ends generation only when asked, on both paths.
    assert lm.generate(PROMPT[:10], 20, stop_ids=[EOS_ID], drafter=AlignedDrafter([EOS_ID] * 20)) == [EOS_ID]
    got = lm.generate(PROMPT[:10], 20, allowed=masks, stop_ids=[EOS_ID], drafter=AlignedDrafter(ref))
    assert got == lm.generate(PROMPT[:10], 20, allowed=masks, stop_ids=[EOS_ID]) == [EOS_ID]


def test_cache_is_consistent_after_rejections(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf, kv_type="f32")
    lm.eval_prefix(PROMPT)
    lm.generate(PROMPT + [5, 6, 7], 24, drafter=_Junk(3), max_draft=6)
    q = [11, 12, 13, 14]
    got = lm.logits(PROMPT + q)
    np.testing.assert_allclose(got, make_lm(tiny_gguf, kv_type="f32").logits(PROMPT + q), atol=1e-4, rtol=0)
    rows = lm.logits_rows(PROMPT + q, start=len(PROMPT) - 1)
    assert rows.shape == (len(q) + 1, V)
    np.testing.assert_allclose(rows[-1], got, atol=1e-4, rtol=0)


def test_sampling_ignores_the_drafter(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    a = lm.generate(PROMPT[:20], 12, temperature=1.5, seed=7)
    assert lm.generate(PROMPT[:20], 12, temperature=1.5, seed=7, drafter=NgramDrafter()) == a
    assert lm.stats.verify_calls == 0


def test_drafter_units():
    ctx = [9, 1, 2, 3, 4, 5, 1, 2]
    assert NgramDrafter(max_n=3, min_n=2).propose(ctx, [], 3) == [3, 4, 5]
    assert NgramDrafter(max_n=3, min_n=2).propose(ctx, [3], 2) == [4, 5]  # history 1 2 3 matches
    assert NgramDrafter().propose([1, 2, 3], [], 4) == []
    # a match less than k ids back is a loop: its period is repeated to fill the draft
    assert NgramDrafter().propose([1, 7, 5, 6, 7, 5], [6], 7) == [7, 5, 6, 7, 5, 6, 7]
    assert NgramDrafter().propose([4, 4, 4], [], 3) == [4, 4, 4]
    assert AlignedDrafter([7, 8, 9]).propose(ctx, [0], 5) == [8, 9]
    assert ChainDrafter(NgramDrafter(), AlignedDrafter([4, 4])).propose([1, 2, 3], [], 2) == [4, 4]
    assert span_drafter("none") is None and isinstance(span_drafter("auto"), NgramDrafter)
    assert AlignedDrafter([7, 8, 9], max_len=1).propose(ctx, [], 3) == [7]
    assert isinstance(span_drafter("auto", [1, 2]), NgramDrafter)
    assert isinstance(span_drafter("aligned", [1, 2]), AlignedDrafter)
    with pytest.raises(ValueError):
        span_drafter("aligned")
    m = np.zeros(5, dtype=bool)
    m[[1, 3]] = True
    assert masked_argmax(np.array([9.0, 1, 0, 1, 0]), m) == 1  # lowest id on ties, inside the mask


def test_argmax_rows_equals_masked_argmax_of_logits_rows(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf, kv_type="f32")
    masks = _layer_schedule_masks(2, np.random.default_rng(5))
    ids = PROMPT + [11, 12, 13, 14, 15, 16]
    start = len(PROMPT) - 1
    rows = lm.logits_rows(ids, start)
    lm.reset()  # the same evaluation path again
    picks = lm.argmax_rows(ids, start, masks[:len(ids) - start])
    assert picks == [masked_argmax(r, m) for r, m in zip(rows, masks)]
    assert lm.argmax_rows(ids, len(ids) - 1, [None]) == [int(np.argmax(rows[-1]))]
    with pytest.raises(ValueError, match="one mask per row"):
        lm.argmax_rows(ids, start, masks[:2])


def test_masked_chooser_units():
    from runtime.lm_choice import MaskedChooser
    from runtime.lm_errors import HeadVocabularyError

    m = np.zeros(8, dtype=bool)
    m[[1, 3, 6]] = True
    full = MaskedChooser()
    assert full.pick(np.array([9.0, 1, 0, 1, 0, 0, 1, 0], dtype=np.float32), m) == 1  # lowest id on ties
    assert full.pick(np.array([9.0, 1, 0, 1, 0, 0, 2, 0], dtype=np.float32), m) == 6
    assert full.pick(np.array([0.0, 1, 5, 0, 0, 0, 0, 0], dtype=np.float32), None) == 2
    assert full.rows_of(m) is full.rows_of(m)  # memoised per mask object
    # an audio head keeping original ids 1, 3, 4, 6: rows are local, answers are original ids
    kept = np.array([1, 3, 4, 6])
    local = np.full(8, -1)
    local[kept] = np.arange(4)
    head = MaskedChooser(kept, local)
    row = np.array([2.0, 7.0, 9.0, 7.0], dtype=np.float32)  # logits of ids 1, 3, 4, 6
    assert head.pick(row, m) == 3  # 4 is not allowed; 3 and 6 tie: the lower id
    wide = np.full(8, -np.inf, dtype=np.float32)
    wide[kept] = row
    assert head.pick(row, m) == masked_argmax(wide, m)
    bad = m.copy()
    bad[0] = True  # id 0 was dropped by the head
    with pytest.raises(HeadVocabularyError):
        head.pick(row, bad)
    with pytest.raises(ValueError):
        MaskedChooser(kept, None)


@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_spans_decoded_side_by_side_equal_one_at_a_time(tiny_gguf, make_lm, kv_type):
    """`FrozenLM.generate_many` (one KV sequence per span, one decode per round) == `generate` per
    prompt, with every kind of drafter mixed in one call, under layer masks."""
    lm = make_lm(tiny_gguf, kv_type=kv_type)
    masks = _layer_schedule_masks(3, np.random.default_rng(2))
    rng = np.random.default_rng(4)
    prompts = [PROMPT + rng.integers(3, V, int(rng.integers(1, 30))).tolist() for _ in range(5)]
    ref = [lm.generate(p, len(masks), allowed=masks) for p in prompts]
    drafters = [None, _Junk(1), NgramDrafter(), AlignedDrafter(ref[3]), _Corrupted(ref[4], 3)]
    lm.eval_prefix(PROMPT)
    assert lm.generate_many(prompts, len(masks), allowed=masks, drafters=drafters, max_draft=6) == ref
    assert lm.cached_ids == PROMPT  # the shared prefix stays cached in sequence 0; the spans' cells are gone
    np.testing.assert_allclose(lm.logits(prompts[0]), make_lm(tiny_gguf, kv_type=kv_type).logits(prompts[0]),
                               atol=1e-3 if kv_type == "f16" else 1e-4, rtol=0)
    # no shared prefix at all, and groups forced small by the context: still the same spans
    small = make_lm(tiny_gguf, kv_type=kv_type, n_ctx=256)
    others = [rng.integers(3, V, 40).tolist() for _ in range(4)]
    want = [small.generate(p, 21, allowed=masks[:21]) for p in others]
    assert small.generate_many(others, 21, allowed=masks[:21], drafters=[NgramDrafter() for _ in others]) == want


def test_generate_many_refuses_bad_arguments(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    with pytest.raises(ValueError, match="one drafter per prompt"):
        lm.generate_many([PROMPT, PROMPT], 4, drafters=[None])
    with pytest.raises(ValueError, match="empty prompt"):
        lm.generate_many([PROMPT, []], 4)
    assert lm.generate_many([PROMPT, PROMPT[:50]], 0) == [[], []]
