"""Shared LLM fixtures: tiny real LLaMA GGUFs with the LLaMA-2 vocabulary, built once per session.

Import the fixtures you use into a test module (``from fixtures_llm import tiny_gguf``);
pytest puts tests/ on sys.path (rootdir-relative "prepend" import mode).
"""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB_GGUF = DATA / "vocab" / "ggml-vocab-llama-spm.gguf"
SPM_MODEL = DATA / "vocab" / "llama2_tokenizer.model"
EOS_ID = 2


def _need_vocab() -> None:
    if not VOCAB_GGUF.is_file():
        pytest.skip(f"shared LLaMA-2 vocabulary GGUF missing: {VOCAB_GGUF}")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """dim 64, 2 layers, 4 heads, f32, seed 0, ctx 2048: a real (random) LLaMA with 32,000 tokens."""
    _need_vocab()
    from scripts.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny.gguf", VOCAB_GGUF, seed=0)


@pytest.fixture(scope="session")
def eos_gguf(tmp_path_factory) -> Path:
    """A tiny LLaMA whose logits favour EOS (id 2) at every position by a wide margin."""
    _need_vocab()
    from scripts.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "eos.gguf", VOCAB_GGUF, seed=1, favor=EOS_ID)


@pytest.fixture(scope="session")
def sp():
    """The reference LLaMA-2 SentencePiece tokenizer."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece not installed")
    if not SPM_MODEL.is_file():
        pytest.skip(f"shared LLaMA-2 tokenizer missing: {SPM_MODEL}")
    return spm.SentencePieceProcessor(model_file=str(SPM_MODEL))


@pytest.fixture()
def make_lm():
    """Factory for fresh `FrozenLM`s (own KV cache and counters); skips without llama_cpp."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from runtime.lm import FrozenLM

    def make(path: Path, **kw) -> FrozenLM:
        kw.setdefault("n_ctx", 512)
        kw.setdefault("n_threads", 1)  # tiny models: a 2nd thread only spins on a busy 2-core CI box
        return FrozenLM(path, **kw)

    return make
