"""Audio-head GGUFs (runtime.lm_head): a cut output head gives the full model's masked decoding.

Tiny f32 LLaMAs (LLaMA-2 vocabulary) for the exact properties and the refusals; the real default
pair (Gemma 3 270M + default codec, built by `make models`) for the engine path: the audio head is
picked, decodes the same tokens, and a prompt with text it lacks switches to the full model.
"""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from fixtures_llm import make_lm, tiny_gguf, eos_gguf  # noqa: F401
from fixtures_tasks import matched_bundle, mismatched_bundle, task_llm  # noqa: F401
from runtime.defaults import DEFAULT_ROOT
from runtime.lm_errors import HeadVocabularyError
from tolerances import TOLERANCES, assert_values_close

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")

V = 32000


def _keep(seed: int = 0) -> np.ndarray:
    """Specials + every id of a random third of the vocabulary + the ids of a few words."""
    rng = np.random.default_rng(seed)
    ids = set(rng.choice(np.arange(3, V), size=V // 3, replace=False).tolist()) | {0, 1, 2}
    return np.asarray(sorted(ids), dtype=np.int64)


@pytest.fixture(scope="module")
def head(tiny_gguf, tmp_path_factory):  # noqa: F811
    """(full GGUF path, head GGUF path, kept ids) in one folder, as `head_path` expects them."""
    from runtime.lm_head import head_path, write_head_gguf

    root = tmp_path_factory.mktemp("head")
    full = root / "tiny.gguf"
    shutil.copy(tiny_gguf, full)
    keep = _keep()
    path = write_head_gguf(full, head_path(full), keep, progress=False)
    return full, path, keep


def test_head_logits_equal_the_full_model_at_kept_ids(head, make_lm):  # noqa: F811
    full_path, head_path, keep = head
    full, cut = make_lm(full_path), make_lm(head_path)
    assert cut.n_vocab == full.n_vocab == V and cut.head_rows == keep.size
    assert cut.fingerprint == full.fingerprint
    assert cut.bos_id == full.bos_id and cut.eos_id == full.eos_id
    text = "Input: a dog barks\nOutput:"
    assert cut.tokenize_text(text) == full.tokenize_text(text)
    ids = [1] + keep[10:60].tolist()
    a, b = full.logits_rows(ids, 20), cut.logits_rows(ids, 20)
    dropped = np.ones(V, bool)
    dropped[keep] = False
    assert_values_close(b[:, keep], a[:, keep], TOLERANCES["llm_audio_head_vs_full_logits"], what="kept logits")
    assert np.isneginf(b[:, dropped]).all()


def test_head_masked_decoding_equals_the_full_model(head, make_lm):  # noqa: F811
    from runtime.draft import NgramDrafter

    full_path, head_path, keep = head
    full, cut = make_lm(full_path), make_lm(head_path)
    mask = np.zeros(V, bool)
    mask[keep[::2]] = True  # a codebook inside the kept ids
    prompt = [1] + keep[100:140].tolist() * 2
    want = full.generate(prompt, 30, allowed=mask)
    assert cut.generate(prompt, 30, allowed=mask) == want
    assert cut.generate(prompt, 30, allowed=mask, drafter=NgramDrafter()) == want
    rng_full = full.generate(prompt, 20, allowed=mask, temperature=0.9, seed=3)
    assert cut.generate(prompt, 20, allowed=mask, temperature=0.9, seed=3) == rng_full


def test_head_refuses_what_needs_the_whole_softmax(head, make_lm):  # noqa: F811
    full_path, head_path, keep = head
    cut = make_lm(head_path)
    dropped = int(np.setdiff1d(np.arange(V), keep)[5])
    with pytest.raises(HeadVocabularyError, match=f"does not keep token ids \\[{dropped}\\]"):
        cut.logits([1, dropped])
    assert not cut.covers([1, dropped]) and cut.covers([1, int(keep[7])])
    with pytest.raises(HeadVocabularyError, match="label scoring"):
        cut.label_logprobs([1, int(keep[3])], [[int(keep[4])]])
    with pytest.raises(HeadVocabularyError, match="unmasked"):
        cut.generate([1, int(keep[3])], 2)
    mask = np.zeros(V, bool)
    mask[[int(keep[3]), dropped]] = True
    assert not cut.covers_mask(mask)
    with pytest.raises(HeadVocabularyError, match="dropped"):
        cut.generate([1, int(keep[3])], 2, allowed=mask)


def test_head_checks_its_source(head, eos_gguf, tmp_path, make_lm):  # noqa: F811
    from runtime.lm import ModelLoadError

    _, head_path, _ = head
    alone = tmp_path / head_path.name
    shutil.copy(head_path, alone)
    with pytest.raises(ModelLoadError, match="which is missing"):
        make_lm(alone)
    shutil.copy(eos_gguf, tmp_path / "tiny.gguf")  # same name and vocabulary, other weights
    with pytest.raises(ModelLoadError, match="cut from another"):
        make_lm(alone)


def test_writer_refuses_bad_input(head, tmp_path):
    from runtime.lm_head import write_head_gguf

    full, head_path, keep = head
    with pytest.raises(ValueError, match="ascending"):
        write_head_gguf(full, tmp_path / "x.gguf", keep[::-1], progress=False)
    with pytest.raises(ValueError, match="already an audio-head"):
        write_head_gguf(head_path, tmp_path / "x.gguf", keep[:100], progress=False)
    no_eos = keep[keep != 2]
    with pytest.raises(ValueError, match="eos_token_id"):
        write_head_gguf(full, tmp_path / "x.gguf", no_eos, progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_head_ids_keeps_tables_specials_and_single_characters():
    from runtime.lm_head import head_ids

    pieces = ["<pad>", "<eos>", "<unused3>", "<0x0A>", "▁the", "▁a", "x", "▁dog", "ζ", "▁cat", "<b>"]
    types = np.array([3, 3, 3, 6, 1, 1, 1, 1, 1, 1, 4])
    got = head_ids(pieces, types, [np.array([9])], text_ids=[4], special_ids=[1]).tolist()
    # <unused3>, "▁dog" (neither table nor text) and the non-ASCII "ζ" are dropped
    assert got == [0, 1, 3, 4, 5, 6, 9, 10]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        head_ids(pieces, types, [np.array([11])])


def test_cli_writes_a_head_and_refuses_a_mismatched_bundle(task_llm, matched_bundle, mismatched_bundle,  # noqa: F811
                                                           tmp_path, capsys):
    from runtime.lm_head import main

    out = tmp_path / "h.gguf"
    assert main(["--model", str(task_llm), "--codec", str(matched_bundle), "--out", str(out), "--no-progress"]) == 0
    assert "output head 32000 of 32000 rows" in capsys.readouterr().out  # LLaMA-2: the table is the vocabulary
    assert main(["--model", str(task_llm), "--codec", str(mismatched_bundle), "--out", str(tmp_path / "m.gguf"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocabulary mismatch" in err[0]


def test_engine_ignores_a_head_that_lacks_the_codec_tables(task_llm, matched_bundle, tmp_path):  # noqa: F811
    from runtime.lm_head import head_path, write_head_gguf
    from runtime.tasks import open_engine

    full = tmp_path / "tiny.gguf"
    shutil.copy(task_llm, full)
    write_head_gguf(full, head_path(full), _keep(1), progress=False)
    with pytest.warns(RuntimeWarning, match="lacks token ids of codec layer"):
        engine = open_engine(full, matched_bundle, n_ctx=512, threads=1, audio_head=True)
    assert engine.lm.head_rows == engine.lm.n_vocab


GEMMA, BUNDLE = DEFAULT_ROOT / "llm.gguf", DEFAULT_ROOT / "codec"
NOISY = DEFAULT_ROOT.parents[1] / "examples" / "noisy_p257_411.wav"


def test_default_audio_head_denoises_identically_and_falls_back_for_rare_text():
    from runtime.lm_head import head_path

    if not head_path(GEMMA).is_file() or not (BUNDLE / "manifest.json").is_file():
        pytest.fail(f"default models missing ({head_path(GEMMA)}, {BUNDLE}): run `make models` first")
    from runtime.audio import read_audio
    from runtime.tasks import TaskOptions, load_demo_set, open_engine
    from runtime.tasks.denoise import chunk_prompts, pair_demos

    outs = {}
    for audio_head in (True, False):
        engine = open_engine(GEMMA, BUNDLE, n_ctx=1024, threads=1, audio_head=audio_head)
        assert (engine.lm.head_rows < engine.lm.n_vocab) == audio_head
        demo_set = load_demo_set(DEFAULT_ROOT / "demos" / "denoise", "denoise")
        opts = TaskOptions().with_defaults("denoise", demo_set.info)
        demos = pair_demos(engine, [(r.input, r.output) for r in demo_set.select_first(None)], opts)
        prompt, query = next(chunk_prompts(engine, demos, read_audio(NOISY, engine.sample_rate), opts))
        engine.use_prefix(prompt)
        outs[audio_head] = engine.generate_span(prompt.ids, query.n_groups, opts, query=query)
    assert outs[True] == outs[False]
    # TTS text with a rare word: the head lacks its pieces, so the engine switches to the full model.
    from runtime.prompt import TTS_INSTRUCTION

    engine = open_engine(GEMMA, BUNDLE, n_ctx=1024, threads=1, audio_head=True)
    opts = TaskOptions().with_defaults("tts")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prompt = engine.prompt([], "antidisestablishmentarianism", opts, TTS_INSTRUCTION, reserve=8)
    assert any("switching to the full model" in str(w.message) for w in caught)
    assert engine.lm.head_rows == engine.lm.n_vocab and engine.lm.covers(prompt.ids)
