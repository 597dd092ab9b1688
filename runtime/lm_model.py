"""Opening the few-shot engine's GGUF with llama.cpp: file checks, load errors, the multi-sequence context.

Split from `runtime.lm` so `FrozenLM` holds only the evaluation engine: everything here runs once,
while a model is loaded, and turns llama.cpp's failures into `ModelLoadError` with a cause the user
can act on (missing file, not a GGUF, unknown architecture, damaged file, non-SentencePiece
vocabulary). `llama_cpp_version` is part of the prefix-cache key (`runtime.prefix_cache`).
`runtime.lm` re-exports `ModelLoadError` and `llama_cpp_version`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ModelLoadError", "llama_cpp_version", "check_gguf", "gguf_architecture", "load_llama", "VocabOnly", "open_vocab",
           "check_tokenizer", "open_sequences"]


def llama_cpp_version() -> str:
    """The llama-cpp-python version (part of the prefix-cache key: KV layouts change between versions)."""
    import llama_cpp

    return str(llama_cpp.__version__)


class ModelLoadError(RuntimeError):
    """The GGUF is missing, is not a GGUF, or llama.cpp cannot load it."""


def check_gguf(path: Path) -> None:
    """Raise `ModelLoadError` unless ``path`` is a regular file starting with the GGUF magic."""
    if not path.exists():
        raise ModelLoadError(f"LLM model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"LLM model path {path} is a directory or special file, not a GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF'); "
                             f"convert the model with llama.cpp's convert scripts")


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of a GGUF, or None if the header cannot be read (error path only: slow)."""
    try:
        import gguf

        field = gguf.GGUFReader(path, "r").get_field("general.architecture")
        return bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else None
    except Exception:  # any damage: the caller reports the file as corrupt
        return None


def load_llama(path: Path, n_ctx: int, n_threads: int | None, n_gpu_layers: int, n_batch: int, seed: int,
               kv_type: str, verbose: bool, n_threads_batch: int | None = None) -> Any:
    """A ``llama_cpp.Llama`` over ``path`` with a ``kv_type`` ("f16" or "f32") KV cache.

    n_threads: threads of one-token steps; n_threads_batch: of batches (None: n_threads).

    Raises `ModelLoadError` for a bad file or one llama.cpp cannot load, ValueError for another kv_type."""
    import llama_cpp

    check_gguf(path)
    kv_types = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}
    if kv_type not in kv_types:
        raise ValueError(f"kv_type must be one of {sorted(kv_types)}, got {kv_type!r}")
    try:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads,
            n_threads_batch=n_threads if n_threads_batch is None else n_threads_batch,
            n_gpu_layers=n_gpu_layers, seed=seed, logits_all=False, verbose=verbose,
            type_k=kv_types[kv_type], type_v=kv_types[kv_type])
    except (ValueError, RuntimeError, OSError) as e:
        arch = gguf_architecture(path)
        why = (f"llama.cpp {llama_cpp.__version__} cannot run architecture {arch!r} or the file is damaged"
               if arch else "corrupt or truncated GGUF")
        raise ModelLoadError(f"llama.cpp could not load {path}: {why} ({e})") from e


def check_tokenizer(llm: Any, path: Path) -> None:
    """Raise `ModelLoadError` unless the loaded model has a SentencePiece ("llama") vocabulary."""
    tokenizer = llm.metadata.get("tokenizer.ggml.model")
    if tokenizer not in (None, "llama"):
        raise ModelLoadError(f"{path} has a {tokenizer!r} vocabulary; the codec's token tables need a "
                             "SentencePiece vocabulary (tokenizer.ggml.model 'llama': LLaMA, Gemma, Mistral ...)")


def open_sequences(llm: Any, n_seq_max: int, verbose: bool) -> int:
    """Replace the Llama's context by one with up to ``n_seq_max`` sequences over a unified KV cache.

    llama-cpp-python's constructor exposes neither setting (it opens one sequence), and batched
    label scoring needs one sequence per candidate. Same model, same parameters otherwise; the
    caller's own ``llama_batch`` gives every token its position, sequence and logits flag.
    Returns the number of sequences opened."""
    import llama_cpp
    from llama_cpp import _internals

    # llama.cpp sizes its output buffer by n_batch: more sequences than that abort at creation.
    n_seq = max(1, min(int(n_seq_max), int(llama_cpp.llama_max_parallel_sequences()), int(llm.n_batch)))
    params = llm.context_params
    params.n_seq_max, params.kv_unified = n_seq, True
    old, llm._ctx = llm._ctx, _internals.LlamaContext(model=llm._model, params=params, verbose=verbose)
    old.close()
    llm.n_tokens = 0
    return n_seq


class VocabOnly:
    """A GGUF's tokenizer and pieces without its weights (llama.cpp ``vocab_only``: ~0.3 s for Gemma 3).

    The audio-head GGUFs of `runtime.lm_head` encode prompt text with their source's full vocabulary."""

    def __init__(self, path: str | Path) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lc = llama_cpp
        self.path = Path(path)
        check_gguf(self.path)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model = _internals.LlamaModel(path_model=str(self.path), params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(f"llama.cpp could not read the vocabulary of {self.path} ({e})") from e
        self._vocab = llama_cpp.llama_model_get_vocab(self._model.model)
        self.n_vocab = int(self._model.n_vocab())

    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, special))

    def piece_bytes(self, i: int) -> bytes:
        return bytes(self._lc.llama_vocab_get_text(self._vocab, int(i)))

    def pieces(self) -> list[str]:
        return [self.piece_bytes(i).decode("utf-8", errors="replace") for i in range(self.n_vocab)]

    def token_types(self) -> Any:
        """gguf token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) from
        llama.cpp's token attributes: (V,) int32."""
        import numpy as np

        lc = self._lc
        by_attr = ((lc.LLAMA_TOKEN_ATTR_UNKNOWN, 2), (lc.LLAMA_TOKEN_ATTR_CONTROL, 3),
                   (lc.LLAMA_TOKEN_ATTR_USER_DEFINED, 4), (lc.LLAMA_TOKEN_ATTR_UNUSED, 5), (lc.LLAMA_TOKEN_ATTR_BYTE, 6))
        out = np.ones(self.n_vocab, dtype=np.int32)
        for i in range(self.n_vocab):
            attr = int(lc.llama_vocab_get_attr(self._vocab, i))
            for bit, t in by_attr:
                if attr & bit:
                    out[i] = t
                    break
        return out

    def token_bos(self) -> int:
        return int(self._lc.llama_vocab_bos(self._vocab))

    def token_eos(self) -> int:
        return int(self._lc.llama_vocab_eos(self._vocab))

    def special_ids(self) -> list[int]:
        """BOS, EOS and, where defined, PAD/UNK ids."""
        lc, v = self._lc, self._vocab
        ids = [lc.llama_vocab_bos(v), lc.llama_vocab_eos(v), lc.llama_vocab_pad(v)]
        return [int(i) for i in ids if int(i) >= 0]


def open_vocab(path: str | Path) -> VocabOnly:
    """`VocabOnly` over ``path`` (raises `ModelLoadError` for a bad file)."""
    return VocabOnly(path)
