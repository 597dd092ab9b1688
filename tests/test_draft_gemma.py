"""Draft decoding, batched label scoring and the prefix cache on the real default LLM (Gemma 3 270M Q4_K_M).

llama.cpp picks its CPU matmul kernels by the number of tokens in a batch, and on Q4_K weights
they disagree by up to ~1 logit, so a verification batch and a one-token step need not give the
same logits (on the tiny f32 models they do, and tests/test_draft.py demands identical outputs).
Here: draft decoding equals plain decoding wherever no near-tie intervenes, every divergence starts
at a near-tie of the plain path's own logits, batched label scores stay within kernel noise of the
sequential ones with the same ranking, and a cached prefix start is bit-identical to a cold one.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime.defaults import DEFAULT_ROOT

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")

GEMMA = DEFAULT_ROOT / "llm.gguf"
BUNDLE = DEFAULT_ROOT / "codec"
NOISY = DEFAULT_ROOT.parents[1] / "examples" / "noisy_p257_411.wav"


@pytest.fixture(scope="module")
def engine():
    if not GEMMA.is_file() or not (BUNDLE / "manifest.json").is_file() or not NOISY.is_file():
        pytest.fail(f"default models missing ({GEMMA}, {BUNDLE}, {NOISY}): run `make models` first")
    from runtime.tasks import open_engine

    return open_engine(GEMMA, BUNDLE, n_ctx=1024, threads=1, seed=0)


@pytest.fixture(scope="module")
def denoise_prompts(engine):
    """(prompt, query tokens, opts) of the first two chunks of the bundled noisy example."""
    from runtime.tasks import TaskOptions, load_demo_set
    from runtime.tasks.denoise import chunk_prompts, pair_demos

    demo_set = load_demo_set(DEFAULT_ROOT / "demos" / "denoise", "denoise")
    opts = TaskOptions().with_defaults("denoise", demo_set.info)
    demos = pair_demos(engine, [(r.input, r.output) for r in demo_set.select_first(None)], opts)
    from runtime.audio import read_audio

    pcm = read_audio(NOISY, engine.sample_rate)
    return [(p, q, opts) for p, q in list(chunk_prompts(engine, demos, pcm, opts))[:3]]


NEAR_TIE = 2.0  # logits: twice the largest batch-vs-single difference measured on these prompts


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def _plain_with_logits(lm, prompt, n, allowed):
    """Plain one-token greedy decoding from the cached demonstration prefix, keeping each step's
    masked logits (the same calls as `FrozenLM.generate`, hence the same bits)."""
    from runtime.draft import masked_argmax

    lm.truncate(prompt.prefix_len)
    seq, out, steps = list(prompt.ids), [], []
    logits = lm.logits(seq)
    for i in range(n):
        steps.append(np.where(allowed(i), logits, -np.inf))
        out.append(masked_argmax(logits, allowed(i)))
        seq.append(out[-1])
        if i < n - 1:
            logits = lm.logits(seq)
    return out, steps


def test_draft_vs_plain_greedy_on_real_denoise_spans(engine, denoise_prompts):
    from runtime.draft import AlignedDrafter, span_drafter
    from runtime.prompt import audio_span

    lm = engine.lm
    for prompt, query, opts in denoise_prompts:
        g = query.n_groups
        allowed = engine.span_allowed(g, opts.layout, opts.layers)
        n = engine.span_length(g, opts)
        engine.use_prefix(prompt)
        plain, steps = _plain_with_logits(lm, prompt, n, allowed)
        lm.truncate(prompt.prefix_len)
        assert lm.generate(prompt.ids, n, allowed=allowed) == plain  # bit-reproducible along one path
        qspan = audio_span(query, opts.layout, opts.layers)
        for drafter in (span_drafter("auto", qspan), AlignedDrafter(qspan)):
            lm.truncate(prompt.prefix_len)
            got = lm.generate(prompt.ids, n, allowed=allowed, drafter=drafter, max_draft=8)
            assert len(got) == n and all(allowed(i)[t] for i, t in enumerate(got))
            j = _first_divergence(got, plain)
            if j is not None:  # the draft run chose the plain step's runner-up at a near-tie
                margin = steps[j][plain[j]] - steps[j][got[j]]
                assert 0.0 <= margin < NEAR_TIE, (j, margin)


def test_spans_side_by_side_vs_plain_greedy_on_real_denoise_spans(engine, denoise_prompts):
    """`FrozenLM.generate_many` (the chunks in parallel KV sequences, one decode per round): each
    span equals plain greedy decoding of its prompt up to a near-tie of the plain path's logits."""
    from runtime.draft import span_drafter
    from runtime.prompt import audio_span

    lm = engine.lm
    prompt0, query0, opts = denoise_prompts[0]
    g = query0.n_groups
    allowed = engine.span_allowed(g, opts.layout, opts.layers)
    n = engine.span_length(g, opts)
    engine.use_prefix(prompt0)
    plains = [_plain_with_logits(lm, p, n, allowed) for p, _, _ in denoise_prompts]
    for kind in ("none", "auto"):
        drafters = [span_drafter(kind, audio_span(q, opts.layout, opts.layers)) for _, q, _ in denoise_prompts]
        got = lm.generate_many([p.ids for p, _, _ in denoise_prompts], n, allowed=allowed, drafters=drafters)
        # only the prompts' shared prefix (demonstrations + the query template's start) stays cached
        assert len(lm.cached_ids) >= prompt0.prefix_len and lm.cached_ids == prompt0.ids[:len(lm.cached_ids)]
        for (plain, steps), span in zip(plains, got):
            assert len(span) == n and all(allowed(i)[t] for i, t in enumerate(span))
            j = _first_divergence(span, plain)
            print(kind, "first divergence", j, "margin", None if j is None else steps[j][plain[j]] - steps[j][span[j]])
            if j is not None:
                margin = steps[j][plain[j]] - steps[j][span[j]]
                assert 0.0 <= margin < NEAR_TIE, (kind, j, margin)


def test_batched_label_scoring_equals_sequential_on_gemma(engine, denoise_prompts):
    lm = engine.lm
    prompt = denoise_prompts[0][0].ids
    labels = ["dog", "rooster", "crying baby", "church bells", "clock tick", "sea waves", "door wood knock"]
    cands = [engine.tokenize(x) for x in labels] + [[1], [0, 1, 2]]
    batched = lm.label_logprobs(prompt, cands)
    sequential = lm.label_logprobs(prompt, cands, batched=False)
    print("max |batched - sequential| nat:", np.abs(batched - sequential).max())
    np.testing.assert_allclose(batched, sequential, atol=0.5, rtol=0)
    single = [i for i, c in enumerate(cands) if len(c) == 1]  # scored from the prompt's own logits
    np.testing.assert_array_equal(batched[single], sequential[single])


def test_cached_prefix_start_equals_cold_start_on_gemma(engine, denoise_prompts, tmp_path):
    from runtime.lm import FrozenLM
    from runtime.prefix_cache import PrefixCache

    prompt, query, opts = denoise_prompts[1]
    g = query.n_groups
    allowed = engine.span_allowed(g, opts.layout, opts.layers)
    n = engine.span_length(g, opts)
    outs = []
    for _ in range(2):  # cold (writes the file), then cached
        lm = FrozenLM(GEMMA, n_ctx=1024, n_threads=1)
        lm.prefix_cache = PrefixCache(tmp_path)
        first = lm.eval_prefix(prompt.prefix)
        outs.append((first, lm.generate(prompt.ids, n, allowed=allowed), lm.stats.evaluated_tokens))
    assert lm.prefix_cache.hits == 1
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1]
    assert outs[1][2] < outs[0][2] - prompt.prefix_len + 5  # the demonstrations were not evaluated again
