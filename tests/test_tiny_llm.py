"""scripts.tiny_llm: the GGUF it writes is a real LLaMA that llama.cpp runs like a numpy forward."""
from __future__ import annotations

import numpy as np
import pytest

from scripts.tiny_llm import build_tiny_llm, load_weights, main, reference_logits
from fixtures_llm import EOS_ID, VOCAB_GGUF, eos_gguf, tiny_gguf  # noqa: F401

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")

IDS = [1, 278, 6635, 29871, 0, 2, 31999, 13, 4290, 29901]


def _llama_logits(path, ids, kv_f32=True, n_ctx=256) -> np.ndarray:
    """Last-position logits straight from llama_cpp (not through runtime.lm)."""
    t = llama_cpp.GGML_TYPE_F32 if kv_f32 else None
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=False, n_ctx=n_ctx, n_threads=1,
                          verbose=False, type_k=t, type_v=t)
    llm.eval(ids)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def test_loads_with_llama2_vocabulary(tiny_gguf):
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), vocab_only=False, n_ctx=256, verbose=False)
    assert llm.n_vocab() == 32000
    assert (llm.token_bos(), llm.token_eos()) == (1, 2)
    ids = llm.tokenize(b"the cat sat on the mat", add_bos=True)
    assert ids[:2] == [1, 278]  # <s> ▁the
    assert ids.count(278) == 2
    assert llm.tokenize(b" the", add_bos=False)[-1] == 278


def test_logits_match_numpy_reference(tiny_gguf):
    got = _llama_logits(tiny_gguf, IDS)
    all_ref = reference_logits(tiny_gguf, IDS)
    ref = all_ref[-1]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # Non-degenerate: spread-out logits, and positions disagree on their argmax.
    assert 1.0 < ref.std() < 10.0
    assert len(set(all_ref.argmax(-1).tolist())) > 3


def test_default_f16_kv_cache_stays_close(tiny_gguf):
    got = _llama_logits(tiny_gguf, IDS, kv_f32=False)
    ref = reference_logits(tiny_gguf, IDS)[-1]
    np.testing.assert_allclose(got, ref, atol=2e-2, rtol=0)
    assert got.argmax() == ref.argmax()


@pytest.mark.parametrize("kw", [
    pytest.param(dict(n_kv_heads=2, n_layers=1, seed=3), id="gqa"),
    pytest.param(dict(dtype="f16", seed=4), id="f16"),
])
def test_variants_match_reference(tmp_path, kw):
    path = build_tiny_llm(tmp_path / "v.gguf", VOCAB_GGUF, dim=32, **kw)
    got = _llama_logits(path, IDS[:6])
    ref = reference_logits(path, IDS[:6])[-1]  # reads the (f16-rounded) weights back
    atol = 5e-2 if kw.get("dtype") == "f16" else 1e-4  # ggml rounds activations to f16 for f16 weights
    np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
    assert got.argmax() == ref.argmax()


def test_explicit_embeddings_are_written(tmp_path):
    emb = np.random.default_rng(7).standard_normal((32000, 32)).astype(np.float32)
    path = build_tiny_llm(tmp_path / "e.gguf", VOCAB_GGUF, dim=32, n_layers=1, embeddings=emb)
    cfg, w = load_weights(path)
    assert (cfg.dim, cfg.n_layers, cfg.head_dim) == (32, 1, 8)
    np.testing.assert_array_equal(w["token_embd.weight"], emb)
    with pytest.raises(ValueError, match=r"\(32000, 32\)"):
        build_tiny_llm(tmp_path / "bad.gguf", VOCAB_GGUF, dim=32, embeddings=emb[:, :16])


def test_favor_model_prefers_eos_everywhere(eos_gguf):
    ref = reference_logits(eos_gguf, IDS)
    assert np.all(ref.argmax(-1) == EOS_ID)
    assert _llama_logits(eos_gguf, IDS).argmax() == EOS_ID


def test_bad_config_and_missing_vocab(tmp_path):
    with pytest.raises(ValueError, match="heads"):
        build_tiny_llm(tmp_path / "x.gguf", VOCAB_GGUF, dim=30, n_heads=4)
    with pytest.raises(FileNotFoundError, match="vocabulary GGUF not found"):
        build_tiny_llm(tmp_path / "x.gguf", tmp_path / "nope.gguf")


def test_cli_refuses_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["--out", str(out), "--dim", "32", "--layers", "1", "--seed", "5"]) == 0
    first = out.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["--out", str(out), "--dim", "32", "--layers", "1"])
    assert e.value.code == 1 and "--force" in capsys.readouterr().err
    assert main(["--out", str(out), "--dim", "32", "--layers", "1", "--seed", "6", "--force"]) == 0
    assert out.read_bytes() != first
