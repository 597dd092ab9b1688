"""Few-shot tasks end to end: real llama.cpp (tiny LLaMA, LLaMA-2 vocabulary) + real onnxruntime bundle
whose codebooks are that model's embeddings, on demonstration sets built from ../shared/data."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fixtures_llm import DATA
from fixtures_tasks import (blas_one_thread, demo_root, engine, eos_llm, matched_bundle,  # noqa: F401
                            mismatched_bundle, task_llm)

pytestmark = pytest.mark.usefixtures("blas_one_thread")
REPO = Path(__file__).resolve().parents[1]
NOISY = DATA / "voicebank_demand" / "noisy" / "p257_094.wav"


def _opts(**kw):
    from runtime.tasks import TaskOptions

    return TaskOptions(**kw)


def _set(demo_root, name):
    from runtime.tasks import load_demo_set

    return load_demo_set(demo_root / "sets" / name, name.split("-")[0])


def _check_span(engine, tokens, n_groups):
    """Layer lengths g/2g/4g, layer-1 ids in the word table, all ids in the vocabulary."""
    words = set(engine.codec.word_token_ids.tolist())
    assert (len(tokens.l1), len(tokens.l2), len(tokens.l3)) == (n_groups, 2 * n_groups, 4 * n_groups)
    assert set(tokens.l1) <= words
    assert all(0 <= t < engine.lm.n_vocab for t in (*tokens.l2, *tokens.l3))


# ------------------------------------------------------------------ classify

@pytest.mark.parametrize("layers", ["semantic", "all"])
def test_classify_returns_a_label_and_finite_logprobs(engine, demo_root, layers):
    from runtime.tasks.classify import classify

    demos = _set(demo_root, "classify-esc50")
    query = DATA / "esc50" / "audio" / "4-182395-A-0.wav"
    r = classify(engine, demos, query, _opts(shots=1, layers=layers))
    assert sorted(r.logprobs) == demos.labels and len(demos.labels) == 10
    assert r.label in demos.labels
    assert all(np.isfinite(v) and v < 0 for v in r.logprobs.values())
    assert r.label == max(r.logprobs, key=r.logprobs.get)


def test_label_logprobs_equal_an_independent_evaluation(engine, demo_root, task_llm):
    """The per-label scores are log P(label tokens | the episode prompt) of a fresh model."""
    from runtime.lm import FrozenLM, log_softmax
    from runtime.prompt import Demo, classification_instruction
    from runtime.tasks.classify import classify_tokens

    opts = _opts(shots=1).with_defaults("classify")
    rows = _set(demo_root, "classify-ravdess").select_per_label(1)[:3]
    demos = [Demo(engine.clip_tokens(engine.load_clip(r.input, 1.0)), r.label) for r in rows]
    query = engine.clip_tokens(engine.load_clip(DATA / "ravdess" / "audio" / "03-01-05-01-01-01-02.wav", 1.0))
    r = classify_tokens(engine, demos, query, opts)
    labels = sorted({d.output for d in demos})
    prompt = engine.prompt(demos, query, opts, classification_instruction(labels), reserve=0).ids
    fresh = FrozenLM(task_llm, n_ctx=2048, n_threads=2)
    for lab in labels:
        ids = engine.tokenize(lab)
        want = sum(log_softmax(fresh.logits(prompt + ids[:j]))[ids[j]] for j in range(len(ids)))
        assert r.logprobs[lab] == pytest.approx(want, abs=2e-3)
    assert r.prompt_tokens == len(prompt)


def test_classify_constrained_greedy_and_induction_off(engine, demo_root):
    from runtime.prompt import label_candidates
    from runtime.tasks.classify import classify

    demos = _set(demo_root, "classify-esc50")
    query = DATA / "esc50" / "audio" / "4-182395-A-0.wav"
    on = classify(engine, demos, query, _opts(shots=1), method="greedy")
    off = classify(engine, demos, query, _opts(shots=1, induction=False))
    cands = label_candidates(engine.tokenize, demos.labels)
    for j, tok in enumerate(on.generated):  # step j only allows the j-th token of some label, or EOS
        assert tok == engine.lm.eos_id or any(len(c) > j and c[j] == tok for c in cands)
    assert on.label is None or on.label in demos.labels
    assert off.prompt_tokens < on.prompt_tokens  # no instruction line


# ------------------------------------------------------------------ generation

def test_tts_generates_masked_span_of_demonstrated_length(engine, demo_root):
    from runtime.tasks.tts import tts

    demos = _set(demo_root, "tts-fsdd")
    r = tts(engine, demos, "an audio of (1+1)")
    n = round(0.72 * 16000)
    assert r.pcm.shape == (n,) and r.pcm.dtype == np.float32 and np.isfinite(r.pcm).all()
    _check_span(engine, r.tokens, engine.groups_for(n))


def test_eos_favouring_model_keeps_generating_inside_audio(eos_llm, matched_bundle, demo_root):
    """A model whose argmax is always EOS: layer-2/3 positions emit id 2 (a legal audio token, no
    stop), layer-1 positions are forced into the word table by the mask."""
    from runtime.tasks import open_engine
    from runtime.tasks.text2sound import text2sound

    eng = open_engine(eos_llm, matched_bundle, n_ctx=2048, threads=2)
    r = text2sound(eng, _set(demo_root, "text2sound-esc50"), "dog", _opts(shots=2))
    g = eng.groups_for(16000)
    _check_span(eng, r.tokens, g)
    assert set(r.tokens.l2) == {2} and set(r.tokens.l3) == {2}
    assert r.pcm.shape == (16000,)


def test_interleaved_layout_text2sound(engine, demo_root):
    from runtime.tasks.text2sound import label_text, text2sound

    r = text2sound(engine, _set(demo_root, "text2sound-esc50"), "crying_baby",
                   _opts(shots=3, layout="interleaved", clip_seconds=0.5))
    assert r.pcm.shape == (8000,)
    _check_span(engine, r.tokens, engine.groups_for(8000))
    assert label_text("crying_baby") == "an audio of (crying baby)"


def test_denoise_chunks_keep_length_and_reuse_the_demo_prefix(engine, demo_root):
    from runtime.audio import read_audio
    from runtime.tasks.denoise import denoise

    demos = _set(demo_root, "denoise-voicebank")
    pcm = read_audio(NOISY, 16000)[:int(1.3 * 16000)]  # 1.3 s: one full 0.96 s chunk + a padded one
    before = engine.lm.stats.reused_tokens
    r = denoise(engine, demos, pcm)
    assert r.pcm.shape == pcm.shape and np.isfinite(r.pcm).all()
    assert r.chunks == 2 and r.chunk_samples == 8 * 1920
    prefix = r.prompt_tokens - (6 + 56 + 6)  # minus the query: "###\nInput: < " + 8 groups x 7 + " >\nOutput: "
    assert engine.lm.stats.reused_tokens - before >= prefix  # the 2nd chunk re-used the cached demos
    again = denoise(engine, demos, pcm)
    np.testing.assert_array_equal(again.pcm, r.pcm)  # fresh codec streams per call, greedy decoding


def test_denoise_chunks_side_by_side_equal_one_after_another(engine, demo_root):
    """opts.parallel decodes a file's chunks in parallel KV sequences (runtime.lm_parallel): on the
    tiny f32 LLM the audio equals chunk-after-chunk decoding, draft or plain, groups even or not."""
    from runtime.audio import read_audio
    from runtime.tasks.denoise import denoise

    demos = _set(demo_root, "denoise-voicebank")
    pcm = read_audio(NOISY, 16000)  # 3 chunks
    for draft in ("auto", "none"):
        one = denoise(engine, demos, pcm, _opts(draft=draft, parallel=1))
        assert one.chunks == 3
        for par in (2, 4):
            np.testing.assert_array_equal(denoise(engine, demos, pcm, _opts(draft=draft, parallel=par)).pcm, one.pcm)


def test_generation_tasks_refuse_semantic_layers(engine, demo_root):
    from runtime.tasks import TaskError
    from runtime.tasks.tts import tts

    with pytest.raises(TaskError, match="all three codec layers"):
        tts(engine, _set(demo_root, "tts-fsdd"), "an audio of 1", _opts(layers="semantic"))


# ------------------------------------------------------------------ bad inputs

def test_missing_manifest_and_missing_file(tmp_path, demo_root):
    from runtime.tasks import DemoError, load_demo_set

    with pytest.raises(DemoError, match="manifest.csv is missing"):
        load_demo_set(tmp_path, "classify")
    src = demo_root / "sets" / "classify-esc50"
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    lines = (bad / "manifest.csv").read_text().splitlines()
    lines[3] = "clips/nope.wav," + lines[3].split(",")[1]
    (bad / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DemoError, match=r"line 4: audio file .*nope\.wav does not exist"):
        load_demo_set(bad, "classify")
    with pytest.raises(DemoError, match="is a classify demonstration set, not a tts one"):
        load_demo_set(src, "tts")


def _cli(capsys, *argv):
    from runtime.run import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_classify_and_generation(capsys, task_llm, matched_bundle, demo_root, tmp_path):
    common = ["--model", task_llm, "--codec", matched_bundle, "--threads", "2"]
    sets = demo_root / "sets"
    rc, out, err = _cli(capsys, "--task", "classify", "--demos", sets / "classify-ravdess", "--shots", "1",
                        "--input", DATA / "ravdess" / "audio" / "03-01-05-01-01-01-02.wav", *common)
    assert rc == 0, err
    lines = out.splitlines()
    labels = {"angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"}
    assert lines[0] in labels and {ln.split()[1] for ln in lines[1:]} == labels
    assert lines[1].split()[1] == lines[0]  # best first
    wav = tmp_path / "out.wav"
    rc, out, err = _cli(capsys, "--task", "denoise", "--demos", sets / "denoise-voicebank", "--input", NOISY,
                        "--output", wav, *common)
    assert rc == 0, err
    assert sf.info(str(wav)).frames == sf.info(str(NOISY)).frames
    rc, _, err = _cli(capsys, "--task", "tts", "--demos", sets / "tts-fsdd", "--input", "an audio of 2",
                      "--output", wav, *common)
    assert rc == 1 and "exists (pass --force" in err
    rc, _, err = _cli(capsys, "--task", "tts", "--demos", sets / "tts-fsdd", "--input", "an audio of 2",
                      "--output", wav, "--force", *common)
    assert rc == 0 and sf.info(str(wav)).frames == round(0.72 * 16000)


# The real entry point in a subprocess, with torch made unimportable (the runtime never needs it).
NO_TORCH = ("import sys; sys.modules['torch'] = None; from runtime.run import main; "
            "rc = main(sys.argv[1:]); assert not [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'codec', 'export') and sys.modules[m] is not None]; sys.exit(rc)")


def _subprocess_cli(*argv):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_runs_without_torch_and_refuses_a_mismatched_vocabulary(task_llm, matched_bundle, mismatched_bundle,
                                                                     demo_root, tmp_path):
    args = ["--task", "text2sound", "--demos", demo_root / "sets" / "text2sound-esc50", "--input", "rain",
            "--model", task_llm, "--shots", 2]
    p = _subprocess_cli(*args, "--codec", matched_bundle, "--output", tmp_path / "rain.wav")
    assert p.returncode == 0, p.stderr
    assert sf.info(str(tmp_path / "rain.wav")).frames == 16000
    p = _subprocess_cli(*args, "--codec", mismatched_bundle, "--output", tmp_path / "other.wav")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.startswith("error: vocabulary mismatch") and "sha256:abab" in p.stderr
    assert not (tmp_path / "other.wav").exists()


def test_cli_prompt_too_long_says_how_many_demos_fit(capsys, task_llm, matched_bundle, demo_root, tmp_path):
    import re

    args = ["--task", "tts", "--demos", demo_root / "sets" / "tts-fsdd", "--input", "an audio of 1",
            "--model", task_llm, "--codec", matched_bundle, "--n-ctx", "256", "--threads", "2"]
    rc, _, err = _cli(capsys, *args, "--output", tmp_path / "never.wav")
    assert rc == 1 and not (tmp_path / "never.wav").exists()
    m = re.search(r"LLM context is 256 tokens; only (\d+) of the 4 demonstrations fit", err)
    assert m, err
    k = int(m.group(1))
    assert 1 <= k < 4
    rc, _, err = _cli(capsys, *args, "--shots", k, "--output", tmp_path / "fits.wav")  # the count is right
    assert rc == 0, err
    rc, _, err = _cli(capsys, *args, "--shots", k + 1, "--output", tmp_path / "fits.wav", "--force")
    assert rc == 1 and f"only {k} of the {k + 1} demonstrations fit" in err


def test_cli_argument_errors(capsys, task_llm, matched_bundle, demo_root, tmp_path):
    common = ["--model", task_llm, "--codec", matched_bundle]
    rc, _, err = _cli(capsys, "--task", "tts", "--demos", demo_root / "sets" / "tts-fsdd", "--input", "x", *common)
    assert rc == 1 and "pass --output" in err
    rc, _, err = _cli(capsys, "--task", "classify", "--demos", tmp_path, "--input", NOISY, *common)
    assert rc == 1 and "manifest.csv is missing" in err
    rc, _, err = _cli(capsys, "--task", "denoise", "--demos", demo_root / "sets" / "denoise-voicebank",
                      "--input", tmp_path / "none.wav", "--output", tmp_path / "o.wav", *common)
    assert rc == 1 and "none.wav does not exist" in err


def test_classify_calibrated_subtracts_the_silent_query_prior(engine, demo_root):
    import numpy as np

    from runtime.prompt import Demo
    from runtime.tasks.classify import classify, query_tokens

    demos = _set(demo_root, "classify-esc50")
    query = DATA / "esc50" / "audio" / "4-182395-A-0.wav"
    opts = _opts(shots=1).with_defaults("classify", demos.info)
    cal = classify(engine, demos, query, _opts(shots=1), method="calibrated")
    raw = classify(engine, demos, query, _opts(shots=1))
    assert cal.method == "calibrated" and cal.logprobs == pytest.approx(raw.logprobs, abs=1e-3)
    # The prior, by hand: the same prompt with a silent query of the same length.
    q = query_tokens(engine, query, opts)
    silent = engine.clip_tokens(np.zeros(q.n_groups * engine.group_samples, dtype=np.float32))
    rows = demos.select_per_label(1)
    shots = [Demo(engine.clip_tokens(engine.load_clip(r.path("input"), opts.seconds, opts.crop)), r.string("label"))
             for r in rows]
    from runtime.prompt import classification_instruction, label_candidates

    labels = demos.labels
    cands = label_candidates(engine.tokenize, labels)
    prior = engine.lm.label_logprobs(engine.prompt(shots, silent, opts, classification_instruction(labels), 8).ids, cands)
    want = labels[int(np.argmax(np.array([raw.logprobs[lab] for lab in labels]) - prior))]
    assert cal.label == want
