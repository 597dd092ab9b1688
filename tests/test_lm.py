"""runtime.lm.FrozenLM on real llama.cpp running tiny LLaMA GGUFs with the LLaMA-2 vocabulary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures_llm import EOS_ID, VOCAB_GGUF, eos_gguf, make_lm, sp, tiny_gguf  # noqa: F401

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
from runtime.lm import (ContextOverflowError, ModelLoadError, VocabularyMismatchError,  # noqa: E402
                        log_softmax)
from runtime.prompt import AudioTokens, Demo, build_episode_prompt  # noqa: E402
from runtime.vocab import gguf_fingerprint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(1234)
PREFIX = [1] + RNG.integers(3, 32000, 150).tolist()
QUERIES = [RNG.integers(0, 32000, n).tolist() for n in (7, 12)]


def test_vocab_properties_and_text_tokenizer(tiny_gguf, make_lm, sp):
    lm = make_lm(tiny_gguf)
    assert (lm.n_vocab, lm.bos_id, lm.eos_id) == (32000, 1, 2)
    assert lm.n_ctx >= 512
    assert lm.token_piece(278) == "▁the"
    assert lm.fingerprint == gguf_fingerprint(VOCAB_GGUF)
    # The prompt template strings and labels tokenize as with Meta's SentencePiece.
    for text in ["###\nInput: < ", " >\nOutput: ", "happy", "dog barking",
                 "For each of the following input output pairs, output is one of ['a' or 'b']\n"]:
        assert lm.tokenize_text(text) == sp.encode(text), text
    assert lm.tokenize_text("the", add_bos=True) == [1, 278]


def test_second_query_after_prefix_evaluates_only_query(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    lm.eval_prefix(PREFIX)
    assert lm.stats.evaluated_tokens == len(PREFIX)
    cached = []
    for q in QUERIES:
        before = lm.stats.evaluated_tokens, lm.stats.reused_tokens
        cached.append(lm.eval(q))
        assert lm.stats.evaluated_tokens - before[0] == len(q)
        assert lm.stats.reused_tokens - before[1] == len(PREFIX)
    for q, got in zip(QUERIES, cached):
        fresh = make_lm(tiny_gguf).logits(PREFIX + q)  # new context, one full evaluation
        np.testing.assert_allclose(got, fresh, atol=1e-4, rtol=0)
    # Going back to the prefix itself costs nothing (its logits are kept).
    n = lm.stats.evaluated_tokens
    lm.logits(PREFIX)
    assert lm.stats.evaluated_tokens == n


def test_divergent_sequence_trims_cache_to_common_prefix(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    a = PREFIX[:40] + [100, 101, 102]
    b = PREFIX[:40] + [200, 201]
    lm.logits(a)
    got = lm.logits(b)
    assert lm.stats.evaluated_tokens == len(a) + 2 and lm.stats.reused_tokens == 40
    np.testing.assert_allclose(got, make_lm(tiny_gguf).logits(b), atol=1e-4, rtol=0)


def test_label_logprobs_match_full_evaluations(tiny_gguf, make_lm, sp):
    lm = make_lm(tiny_gguf)
    prompt = PREFIX[:60]
    cands = [sp.encode(c) for c in ("happy", "sad", "dog barking", "neutral speech")]
    got = lm.label_logprobs(prompt, cands)
    # One batch for every candidate's tokens but its last (the prompt's logits give the first).
    assert lm.stats.evaluated_tokens == len(prompt) + sum(len(c) - 1 for c in cands)
    assert lm.stats.eval_calls == 2
    ref = make_lm(tiny_gguf)
    want = [sum(log_softmax(ref.logits(prompt + c[:j]))[c[j]] for j in range(len(c))) for c in cands]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.all(got < 0)
    lm.eval_prefix(prompt)
    assert lm.score(cands[2]) == pytest.approx(got[2], abs=1e-4)
    # Scored one candidate after the other on the same model: equal, and the prompt stays cached.
    np.testing.assert_allclose(lm.label_logprobs(prompt, cands, batched=False), got, atol=1e-5, rtol=0)
    assert lm.cached_ids[:len(prompt)] == prompt


@pytest.mark.parametrize("n_seq_max,n_batch", [pytest.param(64, 512, id="one-batch"),
                                               pytest.param(3, 512, id="2-seqs-per-batch"),
                                               pytest.param(64, 8, id="8-token-batches")])
def test_batched_label_scoring_equals_sequential(tiny_gguf, make_lm, n_seq_max, n_batch):
    lm = make_lm(tiny_gguf, kv_type="f32", n_seq_max=n_seq_max, n_batch=n_batch)
    rng = np.random.default_rng(8)
    cands = [rng.integers(3, 32000, int(n)).tolist() for n in rng.integers(1, 6, 11)] + [[2], [0, 1, 2]]
    batched = lm.label_logprobs(PREFIX[:50], cands)
    seq = lm.label_logprobs(PREFIX[:50], cands, batched=False)
    np.testing.assert_allclose(batched, seq, atol=1e-5, rtol=0)
    # The candidates' sequences are gone: the next query reuses the prompt and matches a fresh model.
    q = PREFIX[:50] + [7, 8, 9]
    np.testing.assert_allclose(lm.logits(q), make_lm(tiny_gguf, kv_type="f32").logits(q), atol=1e-4, rtol=0)


def _random_masks(n_steps, rng):
    masks = []
    for _ in range(n_steps):
        m = np.zeros(32000, dtype=bool)
        m[rng.choice(32000, size=int(rng.integers(1, 40)), replace=False)] = True
        masks.append(m)
    return masks


@pytest.mark.parametrize("kw", [
    pytest.param(dict(temperature=0.0), id="greedy"),
    pytest.param(dict(temperature=1.0, seed=3), id="sampled"),
    pytest.param(dict(temperature=2.0, top_k=5, top_p=0.9, seed=4), id="topk-topp"),
])
def test_mask_always_respected(tiny_gguf, make_lm, kw):
    lm = make_lm(tiny_gguf)
    rng = np.random.default_rng(0)
    masks = _random_masks(40, rng)
    out = lm.generate(PREFIX[:30], 40, allowed=masks, **kw)
    assert len(out) == 40
    assert all(masks[i][t] for i, t in enumerate(out))
    # Index arrays and callables work the same way.
    idx = [np.flatnonzero(m) for m in masks]
    assert lm.generate(PREFIX[:30], 40, allowed=lambda s: idx[s], **kw) == out
    assert lm.generate(PREFIX[:30], 40, allowed=np.stack(masks), **kw) == out
    if kw["temperature"] == 0.0:  # greedy = argmax of the masked logits at each step
        seq = PREFIX[:30]
        for i, t in enumerate(out):
            lg = np.where(masks[i], lm.logits(seq), -np.inf)
            assert t == int(np.argmax(lg))
            seq = seq + [t]


def test_sampling_is_seeded_and_varies(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    a = lm.generate(PREFIX[:20], 12, temperature=1.5, seed=7)
    assert a == lm.generate(PREFIX[:20], 12, temperature=1.5, seed=7)
    assert a != lm.generate(PREFIX[:20], 12, temperature=1.5, seed=8)


def test_eos_never_ends_an_audio_span(eos_gguf, make_lm):
    lm = make_lm(eos_gguf)
    assert int(np.argmax(lm.logits(PREFIX[:10]))) == EOS_ID
    out = lm.generate(PREFIX[:10], 24)  # unmasked greedy: EOS wins every step, generation goes on
    assert out == [EOS_ID] * 24
    audio = np.zeros(32000, dtype=bool)
    audio[[0, 1, 2, 500, 900]] = True
    out = lm.generate(PREFIX[:10], 24, allowed=audio, temperature=1.0, seed=1)
    assert len(out) == 24 and set(out) <= {0, 1, 2, 500, 900} and EOS_ID in out
    assert lm.generate(PREFIX[:10], 24, stop_ids=[EOS_ID]) == [EOS_ID]  # only when asked


def test_vocabulary_mismatch_is_a_clear_error(tiny_gguf, make_lm):
    other = "sha256:" + "0" * 64
    with pytest.raises(VocabularyMismatchError) as e:
        make_lm(tiny_gguf, expected_fingerprint=other, expected_source="bundle/manifest.json")
    msg = str(e.value)
    assert str(tiny_gguf) in msg and other in msg and gguf_fingerprint(VOCAB_GGUF) in msg
    assert "bundle/manifest.json" in msg
    make_lm(tiny_gguf, expected_fingerprint=gguf_fingerprint(VOCAB_GGUF))  # the right one loads


def test_missing_and_corrupt_models(tmp_path, tiny_gguf, make_lm):
    with pytest.raises(ModelLoadError, match="not found"):
        make_lm(tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        make_lm(junk)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match="could not load"):
        make_lm(cut)


def test_prompt_longer_than_context(tiny_gguf, make_lm, sp):
    lm = make_lm(tiny_gguf, n_ctx=256)
    with pytest.raises(ContextOverflowError, match=rf"has 300 tokens .* is {lm.n_ctx}"):
        lm.logits([5] * 300)
    with pytest.raises(ContextOverflowError, match=r"generated"):
        lm.generate([5] * 200, 100)
    demos = [Demo(AudioTokens([5000 + i] * 10), "happy") for i in range(20)]
    with pytest.raises(ContextOverflowError, match=r"only \d+ of the 20 demonstrations fit"):
        build_episode_prompt(lm.tokenize_text, demos, AudioTokens([7] * 10), n_ctx=lm.n_ctx, reserve=16)


def test_episode_end_to_end_with_constrained_labels(tiny_gguf, make_lm):
    lm = make_lm(tiny_gguf)
    demos = [Demo(AudioTokens(RNG.integers(3, 32000, 10).tolist()), lab) for lab in ("happy", "sad")]
    queries = [AudioTokens(RNG.integers(3, 32000, 10).tolist()) for _ in range(3)]
    labels = [lm.tokenize_text(x) for x in ("happy", "sad")]
    for q in queries:
        p = build_episode_prompt(lm.tokenize_text, demos, q)
        before = lm.stats.evaluated_tokens
        lm.eval_prefix(p.prefix)
        allowed = [np.array(sorted({c[j] for c in labels if j < len(c)})) for j in range(1)]
        out = lm.generate(p.ids, 1, allowed=allowed)
        assert out[0] in (labels[0][0], labels[1][0])
    # Prefix evaluated once; each later episode evaluates only its query, minus the query's
    # leading "###\nInput: < " template ids, which match the previous query's and stay cached.
    template = len(lm.tokenize_text("###\nInput: < "))
    assert lm.stats.evaluated_tokens - before == p.query_len - template


def test_runtime_llm_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['codec'] = None\n"
            "import runtime.lm, runtime.prompt, runtime.vocab, runtime.lm_errors")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
