"""Errors of the few-shot LLM engine, importable without llama_cpp (prompt.py raises them too)."""
from __future__ import annotations


class VocabularyMismatchError(ValueError):
    """The LLM's vocabulary is not the one the codec's token maps were built for."""


class ContextOverflowError(ValueError):
    """A prompt (plus the tokens to generate) does not fit the LLM's context window."""

    def __init__(self, msg: str, n_tokens: int, n_ctx: int):
        super().__init__(msg)
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class HeadVocabularyError(ValueError):
    """An audio-head GGUF (`runtime.lm_head`) cannot serve this request: a prompt id outside its
    kept vocabulary, or a computation that needs the full softmax (label scoring)."""
