"""The frozen LLM of the few-shot engine: llama.cpp over raw token ids (the only llama_cpp user).

Few-shot episodes share a long fixed prefix (instruction + demonstrations) and differ only in the
query, so the KV cache of the longest common prefix with the previous sequence is kept and only
new tokens are evaluated (`stats` counts both). Decoding applies a per-step allowed-token mask to
the logits, so audio spans can be forced to stay inside a codebook; EOS (id 2) is a legal audio
token and never ends generation unless the caller lists it in ``stop_ids``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from runtime.lm_errors import ContextOverflowError, VocabularyMismatchError
from runtime.vocab import fingerprint_of_bytes

__all__ = ["FrozenLM", "LMStats", "ModelLoadError", "ContextOverflowError", "select_token",
           "VocabularyMismatchError", "log_softmax"]

# A per-step allowed set: bool mask (V,) or int index array; or a callable / list giving one per step.
AllowedStep = np.ndarray
Allowed = Union[None, AllowedStep, Sequence[AllowedStep], Callable[[int], AllowedStep]]


class ModelLoadError(RuntimeError):
    """The GGUF is missing, is not a GGUF, or llama.cpp cannot load it."""


@dataclass
class LMStats:
    """Token counters: evaluated = run through the model, reused = served from the KV cache."""

    evaluated_tokens: int = 0
    reused_tokens: int = 0
    eval_calls: int = 0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two id lists (fast path: b extends a)."""
    if len(b) >= len(a) and b[:len(a)] == a:
        return len(a)
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _check_gguf(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"LLM model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"LLM model path {path} is a directory or special file, not a GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF'); "
                             f"convert the model with llama.cpp's convert scripts")


def _gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of a GGUF, or None if the header cannot be read (error path only: slow)."""
    try:
        import gguf

        field = gguf.GGUFReader(path, "r").get_field("general.architecture")
        return bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else None
    except Exception:  # any damage: the caller reports the file as corrupt
        return None


class FrozenLM:
    """A llama.cpp model evaluated on raw ids with longest-prefix KV-cache reuse.

    n_ctx: context size (llama.cpp may round it up; `n_ctx` reports the real value).
    expected_fingerprint: vocabulary fingerprint the caller's token maps were built for
    (e.g. a codec bundle's); a different GGUF vocabulary raises `VocabularyMismatchError`.
    kv_type: KV-cache precision, "f16" (llama.cpp default, half the memory) or "f32" (exact:
    matches a float64 reference forward to ~1e-5 where f16 is ~1e-3).
    """

    def __init__(self, model_path: str | Path, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, seed: int = 0,
                 expected_fingerprint: str | None = None, expected_source: str | None = None,
                 kv_type: str = "f16", verbose: bool = False):
        import llama_cpp

        self._lc = llama_cpp
        self.model_path = Path(model_path)
        _check_gguf(self.model_path)
        kv_types = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}
        if kv_type not in kv_types:
            raise ValueError(f"kv_type must be one of {sorted(kv_types)}, got {kv_type!r}")
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads,
                n_gpu_layers=n_gpu_layers, seed=seed, logits_all=False, verbose=verbose,
                type_k=kv_types[kv_type], type_v=kv_types[kv_type])
        except (ValueError, RuntimeError, OSError) as e:
            arch = _gguf_architecture(self.model_path)
            why = (f"llama.cpp {llama_cpp.__version__} cannot run architecture {arch!r} or the file is damaged"
                   if arch else "corrupt or truncated GGUF")
            raise ModelLoadError(f"llama.cpp could not load {self.model_path}: {why} ({e})") from e
        tokenizer = self._llm.metadata.get("tokenizer.ggml.model")
        if tokenizer not in (None, "llama"):
            raise ModelLoadError(f"{self.model_path} has a {tokenizer!r} vocabulary; the codec's token tables need a "
                                 "SentencePiece vocabulary (tokenizer.ggml.model 'llama': LLaMA, Gemma, Mistral ...)")
        self.n_vocab = int(self._llm.n_vocab())
        self.n_ctx = int(self._llm.n_ctx())
        self.bos_id = int(self._llm.token_bos())
        self.eos_id = int(self._llm.token_eos())
        self.seed = seed
        self.stats = LMStats()
        self._cached: list[int] = []  # ids whose KV entries are in the cache, in order
        self._last_logits: np.ndarray | None = None  # logits after the whole of _cached
        self._prefix: list[int] = []
        self._prefix_logits: np.ndarray | None = None
        self._fingerprint: str | None = None
        if expected_fingerprint is not None and expected_fingerprint != self.fingerprint:
            src = f" ({expected_source})" if expected_source else ""
            raise VocabularyMismatchError(
                f"vocabulary mismatch: the LLM {self.model_path} has vocabulary {self.fingerprint}, "
                f"but the codec tokens{src} were built for {expected_fingerprint}; use the LLM whose "
                f"embedding table the codec was trained on, or re-export the codec for this LLM")

    # ------------------------------------------------------------ vocabulary

    @property
    def fingerprint(self) -> str:
        """`runtime.vocab` fingerprint of the loaded model's pieces (docs/design.md)."""
        if self._fingerprint is None:
            vocab = self._lc.llama_model_get_vocab(self._llm.model)
            self._fingerprint = fingerprint_of_bytes(
                self._lc.llama_vocab_get_text(vocab, i) for i in range(self.n_vocab))
        return self._fingerprint

    def tokenize_text(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        """The GGUF's own tokenizer, for text parts of prompts only (never for audio tokens)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def token_piece(self, token_id: int) -> str:
        """The vocabulary piece of an id (e.g. '▁the' for 278)."""
        self._check_ids([token_id])
        vocab = self._lc.llama_model_get_vocab(self._llm.model)
        return self._lc.llama_vocab_get_text(vocab, int(token_id)).decode("utf-8", errors="replace")

    # ------------------------------------------------------------ evaluation with prefix reuse

    def _check_ids(self, ids: Sequence[int]) -> None:
        a = np.asarray(ids, dtype=np.int64)
        bad = a[(a < 0) | (a >= self.n_vocab)]
        if bad.size:
            raise ValueError(f"token ids out of range [0, {self.n_vocab}): {bad[:8].tolist()}")

    def _check_fits(self, n: int, what: str = "sequence") -> None:
        if n > self.n_ctx:
            raise ContextOverflowError(
                f"{what} has {n} tokens but the LLM context (n_ctx) is {self.n_ctx}: shorten the "
                f"prompt (fewer demonstrations/repeats) or load the model with a larger n_ctx", n, self.n_ctx)

    def _read_logits(self) -> np.ndarray:
        # logits_all=False keeps only the batch's last row; copy it before the next decode reuses it.
        ptr = self._lc.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def reset(self) -> None:
        """Drop the whole KV cache (the next call evaluates from scratch)."""
        self._llm.reset()
        self._cached, self._last_logits = [], None

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits (V,) float32 after the sequence ``ids``, reusing the cached prefix."""
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("cannot evaluate an empty sequence")
        self._check_ids(ids)
        self._check_fits(len(ids))
        return self._eval_to(ids)

    def _eval_to(self, ids: list[int]) -> np.ndarray:
        """`logits` without validation, for callers that already checked ``ids`` (decode loops)."""
        if ids == self._cached and self._last_logits is not None:
            self.stats.reused_tokens += len(ids)
            return self._last_logits.copy()
        if ids == self._prefix and self._prefix_logits is not None and ids == self._cached[:len(ids)]:
            # The prefix's own logits are kept, so a query's first step needs no re-evaluation.
            self.stats.reused_tokens += len(ids)
            return self._prefix_logits.copy()
        # At least one token must run to produce logits, so a fully cached sequence replays its last.
        n = min(_common_prefix(self._cached, ids), len(ids) - 1)
        self._llm.n_tokens = n  # Llama.eval removes KV entries from n_tokens on (llama_memory_seq_rm)
        try:
            self._llm.eval(ids[n:])
        except Exception:
            self.reset()  # a failed decode leaves the cache in an unknown state
            raise
        self._cached = list(ids)  # a copy: callers (generate) keep appending to theirs
        self._last_logits = self._read_logits()
        self.stats.reused_tokens += n
        self.stats.evaluated_tokens += len(ids) - n
        self.stats.eval_calls += 1
        return self._last_logits.copy()

    def eval_prefix(self, ids: Sequence[int]) -> np.ndarray:
        """Evaluate a fixed prefix (instruction + demonstrations) once and keep it cached.

        Returns its next-token logits (V,). Later `eval`/`score`/`generate` calls whose sequence
        starts with this prefix evaluate only the tokens after it.
        """
        out = self.logits(ids)
        self._prefix, self._prefix_logits = [int(i) for i in ids], out.copy()
        return out

    def eval(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (V,) after the cached prefix followed by ``ids``."""
        return self.logits(self._prefix + [int(i) for i in ids])

    def score(self, ids: Sequence[int]) -> float:
        """Log-probability of ``ids`` following the cached prefix (sum of token log-softmax)."""
        if not self._prefix:
            raise ValueError("score() needs a prefix: call eval_prefix() first")
        return float(self.label_logprobs(self._prefix, [list(ids)])[0])

    def label_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> np.ndarray:
        """log P(candidate | prompt) for each candidate continuation: (C,) float64.

        The prompt is evaluated once; each candidate token then costs one cached step.
        """
        prompt = [int(i) for i in prompt_ids]
        self._check_fits(len(prompt) + max((len(c) for c in candidates), default=0), "prompt + candidate")
        first = log_softmax(self.logits(prompt))
        out = np.zeros(len(candidates), dtype=np.float64)
        for ci, cand in enumerate(candidates):
            cand = [int(t) for t in cand]
            if not cand:
                raise ValueError(f"candidate {ci} is empty")
            self._check_ids(cand)
            lp = first[cand[0]]
            for j in range(1, len(cand)):
                lp += log_softmax(self._eval_to(prompt + cand[:j]))[cand[j]]
            out[ci] = lp
        return out

    # ------------------------------------------------------------ decoding

    def _step_mask(self, allowed: Allowed, step: int) -> np.ndarray | None:
        if allowed is None:
            return None
        if callable(allowed):
            a = allowed(step)
        elif isinstance(allowed, np.ndarray) and allowed.ndim == 1:
            a = allowed  # the same set at every step
        else:
            if step >= len(allowed):
                raise ValueError(f"allowed has {len(allowed)} per-step entries; step {step} has none")
            a = allowed[step]
        a = np.asarray(a)
        if a.dtype == bool:
            if a.shape != (self.n_vocab,):
                raise ValueError(f"allowed mask must have shape ({self.n_vocab},), got {a.shape}")
            mask = a
        else:
            mask = np.zeros(self.n_vocab, dtype=bool)
            mask[a.astype(np.int64)] = True
        if not mask.any():
            raise ValueError(f"allowed set at step {step} is empty")
        return mask

    def generate(self, prompt_ids: Sequence[int], n_tokens: int, allowed: Allowed = None,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, stop_ids: Sequence[int] | None = None) -> list[int]:
        """Decode up to ``n_tokens`` ids after ``prompt_ids`` under a per-step allowed-token mask.

        allowed: None (any id), one 1-D mask/index array for every step, a list (or a 2-D
        (steps, V) bool table, like the official out_mask) with one per step, or a callable
        ``step -> mask/index array``. Disallowed logits are set to -inf before
        argmax (temperature 0) or top-k/top-p sampling. Generation stops early only on an id in
        ``stop_ids`` (EOS is an ordinary token otherwise: ids 0-2 are legal audio tokens).
        """
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        prompt = [int(i) for i in prompt_ids]
        self._check_fits(len(prompt) + n_tokens, f"prompt ({len(prompt)}) + {n_tokens} generated")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        stops = set(int(s) for s in stop_ids) if stop_ids else set()
        seq, out = list(prompt), []
        logits = self.logits(seq)
        for step in range(n_tokens):
            tok = select_token(logits, self._step_mask(allowed, step), temperature, top_k, top_p, rng)
            out.append(tok)
            if tok in stops or step == n_tokens - 1:
                break
            seq.append(tok)
            logits = self._eval_to(seq)
        return out


def select_token(logits: np.ndarray, mask: np.ndarray | None, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, rng: np.random.Generator | None = None) -> int:
    """Greedy (temperature 0) or top-k / top-p sampling over logits (V,) restricted to ``mask``."""
    x = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    if temperature <= 0.0:
        return int(np.argmax(x))
    x = x / temperature
    if top_k > 0:
        kth = np.partition(x, -top_k)[-top_k] if top_k < x.size else -np.inf
        x = np.where(x >= kth, x, -np.inf)
    p = np.exp(x - np.max(x))
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p  # smallest set whose mass reaches top_p
        q = np.zeros_like(p)
        q[order[keep]] = p[order[keep]]
        p = q / q.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(p.size, p=p))
