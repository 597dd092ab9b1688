"""Fixtures for the few-shot task tests: a codec bundle whose codebooks come from the tiny GGUF.

The codec's frozen tables are the tiny LLaMA's own ``token_embd`` (read with codec/vocab.py) and its
word table is `build_word_table` over the LLaMA-2 pieces, so the bundle's vocabulary fingerprint
equals the GGUF's and every layer-1 code is a real one-token word.

Import what you use: ``from fixtures_tasks import task_llm, matched_bundle, engine, demo_root``.
pytest instantiates an imported fixture once per importing module even when session-scoped, so
the builders below memoise in `_CACHE`: the GGUF, the bundle and the demo sets are built once per
process (tests/export_fixtures.py does the same).
"""
from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

from fixtures_llm import DATA, VOCAB_GGUF

# llama.cpp's OpenMP workers spin while waiting; on a busy 2-core box (and once scipy is loaded)
# that made each decoded token 15-300x slower. libgomp reads this when llama_cpp first loads it.
# The CLIs set the same default (runtime/run.py); conftest.py is the better home for it.
import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

WORDS = 256
_CACHE: dict[str, object] = {}


def _once(key: str, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def _openblas_threads(n: int | None) -> int | None:
    """Set the thread count of every loaded OpenBLAS (numpy's, scipy's) through its C API: the
    env var is read only when the library loads. Returns the first previous count (None: none found)."""
    maps = Path("/proc/self/maps")
    libs = [ln.split()[-1] for ln in maps.read_text().splitlines()
            if "openblas" in ln.lower() and ".so" in ln.split()[-1]] if maps.exists() else []
    before = None
    for path in dict.fromkeys(libs):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    before = int(get()) if before is None else before
                    if n is not None:
                        put(ctypes.c_int(n))
                    break
            else:
                continue
            break
    return before


@pytest.fixture(scope="module")
def blas_one_thread():
    """One OpenBLAS thread for the module: the codeword search beside llama.cpp threads otherwise
    oversubscribes the 2 cores (kernels/cpu.py measured up to 70x slower)."""
    import numpy  # noqa: F401  (loads OpenBLAS)

    before = _openblas_threads(1)
    yield
    if before is not None:
        _openblas_threads(before)


@pytest.fixture(scope="session")
def task_llm(tmp_path_factory) -> Path:
    """The tiny LLaMA of fixtures_llm.tiny_gguf (dim 64, 2 layers, seed 0), built once per process."""
    if not VOCAB_GGUF.is_file():
        pytest.skip(f"shared LLaMA-2 vocabulary GGUF missing: {VOCAB_GGUF}")
    from scripts.tiny_llm import build_tiny_llm

    return _once("llm", lambda: build_tiny_llm(tmp_path_factory.mktemp("tasks_llm") / "tiny.gguf", VOCAB_GGUF, seed=0))


@pytest.fixture(scope="session")
def eos_llm(tmp_path_factory) -> Path:
    """A tiny LLaMA whose logits favour EOS (id 2) everywhere (fixtures_llm.eos_gguf)."""
    from scripts.tiny_llm import build_tiny_llm

    return _once("eos", lambda: build_tiny_llm(tmp_path_factory.mktemp("tasks_llm") / "eos.gguf", VOCAB_GGUF,
                                               seed=1, favor=2))


@pytest.fixture(scope="session")
def matched_bundle(task_llm, tmp_path_factory) -> Path:
    """A tiny codec bundle exported from a seeded torch codec over the tiny GGUF's embeddings."""
    pytest.importorskip("torch", reason="building the test bundle needs torch (training install)")
    return _once("bundle", lambda: _build_bundle(task_llm, tmp_path_factory.mktemp("tasks_codec")))


def _build_bundle(gguf: Path, root: Path) -> Path:
    import torch

    from codec.checkpoint import save_checkpoint
    from codec.config import preset
    from codec.model import LLMCodec
    from codec.vocab import build_word_table, load_vocab, make_vocab_info
    from export.onnx import export_bundle

    vocab = load_vocab(gguf)
    words = build_word_table(vocab, WORDS)
    table = torch.from_numpy(vocab.embeddings)
    cfg = preset("tiny", vocab_size=vocab.size, word_table_size=WORDS, llm_dim=vocab.dim)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = LLMCodec(cfg, table[torch.from_numpy(words)], table).eval()
        save_checkpoint(root / "ckpt", model, make_vocab_info(vocab, words))
        export_bundle(root / "ckpt", root / "bundle", chunk_frames=(4,), log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    return root / "bundle"


@pytest.fixture(scope="session")
def mismatched_bundle(matched_bundle, tmp_path_factory) -> Path:
    """The same graphs with a manifest claiming another LLM vocabulary."""
    import json

    def build() -> Path:
        out = tmp_path_factory.mktemp("tasks_codec_other") / "bundle"
        shutil.copytree(matched_bundle, out)
        m = json.loads((out / "manifest.json").read_text())
        m["vocab"]["fingerprint"] = "sha256:" + "ab" * 32
        (out / "manifest.json").write_text(json.dumps(m))
        return out

    return _once("mismatched", build)


@pytest.fixture(scope="session")
def engine(task_llm, matched_bundle):
    """A `FewShotEngine` over the tiny LLaMA and the matched bundle (shared: tasks reuse its KV cache)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from runtime.tasks import open_engine

    return _once("engine", lambda: open_engine(task_llm, matched_bundle, n_ctx=2048, threads=2, seed=0))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Small demonstration sets and labelled views built by scripts.make_demos from ../shared/data."""
    if not (DATA / "esc50" / "meta.csv").is_file():
        pytest.skip(f"shared data missing: {DATA}")
    from scripts.make_demos import main

    def build() -> Path:
        root = tmp_path_factory.mktemp("demos")
        rc = main(["--data", str(DATA), "--out", str(root / "sets"), "--labelled-out", str(root / "labelled"),
                   "--per-label", "2", "--tts-per-digit", "1", "--denoise-pairs", "2"])
        assert rc == 0
        return root

    return _once("demos", build)
