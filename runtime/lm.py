"""The frozen LLM of the few-shot engine: `FrozenLM`, llama.cpp over raw token ids.

Few-shot episodes share a long fixed prefix (instruction + demonstrations) and differ only in the
query, so the KV cache of the longest common prefix with the previous sequence is kept and only
new tokens are evaluated (`stats` counts both). Decoding applies a per-step allowed-token mask to
the logits, so audio spans can be forced to stay inside a codebook; EOS (id 2) is a legal audio
token and never ends generation unless the caller lists it in ``stop_ids``.

Evaluations go through our own ``llama_batch`` (`logits_rows`: one logits row per requested
position, for the draft verifier of `runtime.draft`); label candidates are scored in parallel KV
sequences sharing the prompt's cells (`label_logprobs`); a prefix's KV state can be saved and
restored (`sequence_state`, `load_sequence_state`) for `runtime.prefix_cache`.

The engine is split by concept; this module holds the class and its evaluation core:
`runtime.lm_model` opens the GGUF (checks, `ModelLoadError`, the multi-sequence context),
`runtime.lm_scoring` scores label candidates, `runtime.lm_sampling` picks tokens under masks,
`runtime.lm_errors` holds the llama_cpp-free errors. Names other modules import from here stay
importable from here (`__all__`).
"""
from __future__ import annotations

import ctypes
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.lm_errors import ContextOverflowError, HeadVocabularyError, VocabularyMismatchError
from runtime.lm_choice import MaskedChooser
from runtime.lm_head import HEAD_KEYS, HeadMap, read_head_info
from runtime.lm_model import ModelLoadError, check_tokenizer, llama_cpp_version, load_llama, open_sequences
from runtime.lm_sampling import Allowed, log_softmax, select_token, step_mask
from runtime.lm_scoring import label_logprobs
from runtime.vocab import fingerprint_of_bytes

__all__ = ["FrozenLM", "LMStats", "ModelLoadError", "ContextOverflowError", "HeadVocabularyError", "select_token",
           "VocabularyMismatchError", "log_softmax", "llama_cpp_version"]


@dataclass
class LMStats:
    """Token counters: evaluated = run through the model, reused = served from the KV cache."""

    evaluated_tokens: int = 0
    reused_tokens: int = 0
    eval_calls: int = 0
    draft_proposed: int = 0   # draft tokens sent to the verifier
    draft_accepted: int = 0   # of those, equal to the masked greedy choice
    verify_calls: int = 0     # batched verification passes (one llama_decode each, or more past n_batch)

    @property
    def acceptance_rate(self) -> float:
        return self.draft_accepted / self.draft_proposed if self.draft_proposed else 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two id lists (fast path: b extends a)."""
    if len(b) >= len(a) and b[:len(a)] == a:
        return len(a)
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _chunks(start: int, end: int, cap: int) -> list[tuple[int, int]]:
    """[start, end) cut into batches of at most ``cap`` tokens."""
    bounds = list(range(start, end, cap)) + [end]
    return list(zip(bounds[:-1], bounds[1:]))


class FrozenLM:
    """A llama.cpp model evaluated on raw ids with longest-prefix KV-cache reuse.

    n_ctx: context size (llama.cpp may round it up; `n_ctx` reports the real value).
    expected_fingerprint: vocabulary fingerprint the caller's token maps were built for
    (e.g. a codec bundle's); a different GGUF vocabulary raises `VocabularyMismatchError`.
    kv_type: KV-cache precision, "f16" (llama.cpp default, half the memory) or "f32" (exact:
    matches a float64 reference forward to ~1e-5 where f16 is ~1e-3).
    n_threads / n_threads_batch: threads of one-token steps / of batches (None: n_threads; llama.cpp
    picks by the batch size, and a memory-bound one-token step may run as fast on fewer threads).
    n_seq_max: parallel KV sequences (one per candidate label in batched `label_logprobs`); the KV
    cache is unified, so they share the prompt's cells and the n_ctx budget.
    Exactness on quantised weights: llama.cpp's CPU matmuls take different kernels (one-row
    gemv, 4-row repacked gemm, llamafile sgemm ...) depending on how many tokens a batch holds, so
    the same token's logits and KV values differ by up to ~1 logit (Gemma 3 270M Q4_K_M) between
    batch splits; the same sequence of calls is bit-reproducible. On f32 models all paths agree to
    ~1e-5.
    """

    def __init__(self, model_path: str | Path, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, seed: int = 0,
                 expected_fingerprint: str | None = None, expected_source: str | None = None,
                 kv_type: str = "f16", verbose: bool = False, n_seq_max: int = 64,
                 n_threads_batch: int | None = None):
        import llama_cpp

        self._lc = llama_cpp
        self.model_path = Path(model_path)
        self._llm = load_llama(self.model_path, n_ctx, n_threads, n_gpu_layers, n_batch, seed, kv_type, verbose,
                               n_threads_batch)
        self._open_multi_sequence_context(n_seq_max, verbose)
        check_tokenizer(self._llm, self.model_path)
        self._head = self._open_head()
        self.n_vocab = int(self._llm.n_vocab()) if self._head is None else self._head.n_vocab
        self._chooser = MaskedChooser() if self._head is None else MaskedChooser(self._head.global_ids, self._head.local_ids)
        self._wide_chooser = MaskedChooser()  # for kept full-width rows (`_last_logits`)
        self.n_ctx = int(self._llm.n_ctx())
        src = self._llm if self._head is None else self._head.vocab
        self.bos_id = int(src.token_bos())
        self.eos_id = int(src.token_eos())
        self.seed = seed
        self.n_gpu_layers = int(n_gpu_layers)
        self.kv_type = kv_type
        self.n_batch = int(n_batch)
        self.stats = LMStats()
        self._cached: list[int] = []  # ids whose KV entries are in the cache, in order
        self._last_logits: np.ndarray | None = None  # logits after the whole of _cached
        self.prefix_cache: Any = None  # a runtime.prefix_cache.PrefixCache: eval_prefix reads/writes it
        self._prefix: list[int] = []
        self._prefix_logits: np.ndarray | None = None
        self._fingerprint: str | None = None
        if expected_fingerprint is not None and expected_fingerprint != self.fingerprint:
            src = f" ({expected_source})" if expected_source else ""
            raise VocabularyMismatchError(
                f"vocabulary mismatch: the LLM {self.model_path} has vocabulary {self.fingerprint}, "
                f"but the codec tokens{src} were built for {expected_fingerprint}; use the LLM whose "
                f"embedding table the codec was trained on, or re-export the codec for this LLM")

    def _open_head(self) -> HeadMap | None:
        """The id map of an audio-head GGUF (`runtime.lm_head`), None for an ordinary GGUF (one
        metadata lookup)."""
        if HEAD_KEYS["file"] not in self._llm.metadata:
            return None
        info = read_head_info(self.model_path)
        if info is None:
            return None
        vocab = self._lc.llama_model_get_vocab(self._llm.model)
        pieces = [bytes(self._lc.llama_vocab_get_text(vocab, j)) for j in range(int(self._llm.n_vocab()))]
        return HeadMap(self.model_path, info, pieces)

    def _open_multi_sequence_context(self, n_seq_max: int, verbose: bool) -> None:
        """`runtime.lm_model.open_sequences` (n_seq_max sequences, unified KV cache) and our own
        ``llama_batch``, which gives every token its position, sequence and logits flag."""
        lc, llm = self._lc, self._llm
        self.n_seq_max = open_sequences(llm, n_seq_max, verbose)
        self._batch = lc.llama_batch_init(llm.n_batch, 0, 1)
        self._batch_cap = int(llm.n_batch)
        weakref.finalize(self, lc.llama_batch_free, self._batch)

    def _memory(self):
        return self._lc.llama_get_memory(self._llm.ctx)

    def _decode(self, tokens: Sequence[int], pos: Sequence[int], seq: Sequence[int], want: Sequence[bool]) -> None:
        """One ``llama_decode``: token i at position pos[i] of sequence seq[i], logits kept where want[i]."""
        b = self._batch
        if self._head is not None:
            tokens = self._head.to_local(tokens).tolist()
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i] = int(t), int(pos[i]), 1
            b.seq_id[i][0], b.logits[i] = int(seq[i]), bool(want[i])
        b.n_tokens = len(tokens)
        rc = self._lc.llama_decode(self._llm.ctx, b)
        if rc != 0:
            self.reset()
            raise RuntimeError(f"llama_decode failed with status {rc}")

    def _raw_row(self, i: int) -> np.ndarray:
        """Batch row i of llama.cpp's logits buffer as a (head_rows,) float32 view (valid until the next decode)."""
        return np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._llm.ctx, i), shape=(self.head_rows,))

    def _row(self, i: int) -> np.ndarray:
        if self._head is not None:
            return self._head.widen(self._raw_row(i))
        return self._raw_row(i).astype(np.float32, copy=True)

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` cached tokens (e.g. back to a demonstration prefix, so two decodes
        start from the same KV state: evaluations are bit-reproducible only along the same path)."""
        self._trim(min(int(n), len(self._cached)))

    def _trim(self, n: int) -> None:
        """Drop KV entries of sequence 0 at positions >= n (and keep Llama's own bookkeeping in step)."""
        if not self._lc.llama_memory_seq_rm(self._memory(), 0, n, -1):
            self.reset()
            raise RuntimeError(f"llama.cpp could not trim the KV cache at position {n}")
        self._llm.n_tokens = n
        self._cached = self._cached[:n]
        self._last_logits = None

    # ------------------------------------------------------------ vocabulary

    @property
    def head_rows(self) -> int:
        """Rows of the output head: n_vocab, or the kept ids of an audio-head GGUF (`runtime.lm_head`)."""
        return self.n_vocab if self._head is None else int(self._head.global_ids.size)

    def covers(self, ids: Sequence[int]) -> bool:
        """Whether every id can be evaluated (always, except ids an audio-head GGUF dropped)."""
        if self._head is None:
            return True
        a = np.asarray(ids, dtype=np.int64)
        return bool(np.all(self._head.kept[a[(a >= 0) & (a < self.n_vocab)]]))

    def covers_mask(self, mask: np.ndarray) -> bool:
        """Whether masked decoding under ``mask`` (V,) gives exactly the full model's choices."""
        return self._head is None or self._head.allows(mask)

    def _piece_bytes(self, i: int) -> bytes:
        if self._head is not None:
            return self._head.vocab.piece_bytes(i)
        return bytes(self._lc.llama_vocab_get_text(self._lc.llama_model_get_vocab(self._llm.model), int(i)))

    @property
    def fingerprint(self) -> str:
        """`runtime.vocab` fingerprint of the model's pieces (an audio head: its source's; docs/design.md)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of_bytes(self._piece_bytes(i) for i in range(self.n_vocab))
        return self._fingerprint

    def tokenize_text(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        """The GGUF's own tokenizer (an audio head: its source's), for text parts of prompts only."""
        if self._head is not None:
            return self._head.vocab.tokenize(text, add_bos=add_bos, special=special)
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def token_piece(self, token_id: int) -> str:
        """The vocabulary piece of an id (e.g. '▁the' for 278)."""
        self._check_ids([token_id])
        return self._piece_bytes(int(token_id)).decode("utf-8", errors="replace")

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

    def reset(self) -> None:
        """Drop the whole KV cache (the next call evaluates from scratch)."""
        self._llm.reset()
        self._lc.llama_memory_seq_rm(self._memory(), -1, -1, -1)
        self._cached, self._last_logits = [], None

    @property
    def prefix_ids(self) -> list[int]:
        """The prefix last given to `eval_prefix` (a copy; [] if none)."""
        return list(self._prefix)

    @property
    def cached_ids(self) -> list[int]:
        """The ids whose KV entries are in the cache (sequence 0), in order (a copy)."""
        return list(self._cached)

    def logits_rows(self, ids: Sequence[int], start: int) -> np.ndarray:
        """Next-token logits after each of ``ids[:start+1] ... ids[:len]``: (len(ids) - start, V) float32.

        Every evaluation goes through `_evaluate` (here or in `argmax_rows`): everything from the
        cached prefix on is evaluated in batches of up to n_batch tokens with one logits row per
        position >= ``start``; entries past the common prefix of ``ids`` and the cache are dropped
        first (a rejected draft's tail). The rows can differ from one-token-at-a-time evaluations
        in the last bits (Q4_K: up to ~1 logit, see the class docstring)."""
        rows = self._evaluate(ids, start, lambda i, r: self._row(i))
        self._last_logits = rows[-1].copy()
        return np.stack(rows)

    def argmax_rows(self, ids: Sequence[int], start: int, masks: Sequence[np.ndarray | None]) -> list[int]:
        """The masked greedy choice after each of ``ids[:start+1] ... ids[:len]``: one id per row.

        masks[r]: the bool (V,) allowed mask of row r (None: any id; an audio head refuses None
        through `generate`'s mask check). Equal to `runtime.draft.masked_argmax` of
        `logits_rows`' rows, from the same evaluation, but read from llama.cpp's buffer over the
        allowed ids only (`runtime.lm_choice`), so no full-width row is built."""
        ids = [int(i) for i in ids]
        if len(masks) != len(ids) - start:
            raise ValueError(f"need one mask per row: {len(ids) - start}, got {len(masks)}")
        if start == len(ids) - 1 and self._last_logits is not None and ids == self._cached:
            # already evaluated (e.g. a stream's timed prefill): no second pass over the last token
            self.stats.reused_tokens += len(ids)
            return [self._wide_chooser.pick(self._last_logits, masks[0])]
        pick, raw = self._chooser.pick, self._raw_row
        return self._evaluate(ids, start, lambda i, r: pick(raw(i), masks[r]))

    def hold(self, ids: Sequence[int]) -> None:
        """Make the cache (sequence 0) hold exactly ``ids``: entries past their common prefix with the
        cache are dropped, missing ones evaluated (parallel spans copy these cells, `runtime.lm_parallel`)."""
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        self._check_fits(len(ids))
        n = _common_prefix(self._cached, ids)
        self._trim(n)
        if n < len(ids):
            self._evaluate(ids, len(ids) - 1, lambda i, r: None)

    def _evaluate(self, ids: Sequence[int], start: int, take: Callable[[int, int], Any]) -> list:
        """Evaluate ``ids`` from the cache on; ``take(batch_index, row)`` reads each wanted row."""
        ids = [int(i) for i in ids]
        if not 0 <= start < len(ids):
            raise ValueError(f"start must be in [0, {len(ids)}), got {start}")
        self._check_fits(len(ids))
        n = min(_common_prefix(self._cached, ids), start)
        self._trim(n)
        rows = []
        try:
            for a, b in _chunks(n, len(ids), self._batch_cap):
                chunk = ids[a:b]
                pos = range(a, b)
                self._decode(chunk, pos, [0] * len(chunk), [p >= start for p in pos])
                rows += [take(i, p - start) for i, p in enumerate(pos) if p >= start]
                self._llm.input_ids[a:a + len(chunk)] = chunk
                self._llm.n_tokens = a + len(chunk)
                self.stats.eval_calls += 1
        except Exception:
            self.reset()
            raise
        self._cached, self._last_logits = ids, None
        self.stats.reused_tokens += n
        self.stats.evaluated_tokens += len(ids) - n
        return rows

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
        return self.logits_rows(ids, len(ids) - 1)[0]

    def eval_prefix(self, ids: Sequence[int]) -> np.ndarray:
        """Evaluate a fixed prefix (instruction + demonstrations) once and keep it cached.

        Returns its next-token logits (V,). Later `eval`/`score`/`generate` calls whose sequence
        starts with this prefix evaluate only the tokens after it. With a ``prefix_cache``
        (`runtime.prefix_cache.PrefixCache`) the prefix's KV state is read from disk when a verified
        file exists, and written there after a cold evaluation.
        """
        ids = [int(i) for i in ids]
        cache = self.prefix_cache
        if cache is not None and len(ids) > 2 and self._cached[:len(ids)] != ids:
            self._check_ids(ids)
            self._check_fits(len(ids))
            out = cache.restore(self, ids)
            if out is None:
                # The last token in a batch of its own, exactly as a restore replays it: the
                # same kernels, so the verification can demand bit-identical logits.
                self.logits(ids[:-1])
                out = self.logits(ids)
                cache.store(self, ids, out)
        else:
            out = self.logits(ids)
        self._prefix, self._prefix_logits = ids, out.copy()
        return out

    def sequence_state(self) -> bytes:
        """llama.cpp's serialised KV state of the cached sequence (`cached_ids`)."""
        ctx = self._llm.ctx
        size = int(self._lc.llama_state_seq_get_size(ctx, 0))
        buf = (ctypes.c_uint8 * size)()
        n = int(self._lc.llama_state_seq_get_data(ctx, buf, size, 0))
        if n == 0:
            raise RuntimeError("llama.cpp returned an empty sequence state")
        return bytes(buf)[:n]

    def load_sequence_state(self, ids: Sequence[int], state: bytes) -> None:
        """Replace the KV cache by ``state`` (from `sequence_state`), which must hold ``ids``.

        Raises ValueError when llama.cpp refuses it (damaged, other model or layout). The caller
        verifies the content by replaying a token (`runtime.prefix_cache`)."""
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        self._check_fits(len(ids))
        self.reset()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if int(self._lc.llama_state_seq_set_data(self._llm.ctx, buf, len(state), 0)) == 0:
            self.reset()
            raise ValueError("llama.cpp refused the saved sequence state")
        pos_max = int(self._lc.llama_memory_seq_pos_max(self._memory(), 0))
        if pos_max != len(ids) - 1:
            self.reset()
            raise ValueError(f"the saved state holds {pos_max + 1} positions, expected {len(ids)}")
        self._llm.input_ids[:len(ids)] = ids
        self._llm.n_tokens = len(ids)
        self._cached, self._last_logits = ids, None

    def eval(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (V,) after the cached prefix followed by ``ids``."""
        return self.logits(self._prefix + [int(i) for i in ids])

    def score(self, ids: Sequence[int]) -> float:
        """Log-probability of ``ids`` following the cached prefix (sum of token log-softmax)."""
        if not self._prefix:
            raise ValueError("score() needs a prefix: call eval_prefix() first")
        return float(self.label_logprobs(self._prefix, [list(ids)])[0])

    def label_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]],
                       batched: bool = True) -> np.ndarray:
        """log P(candidate | prompt) for each candidate continuation: (C,) float64.

        The prompt is evaluated once (its KV cache is kept). ``batched``: the candidates run in
        parallel KV sequences sharing the prompt's cells, otherwise one cached step after another
        (`runtime.lm_scoring.label_logprobs`; the two agree to the kernel noise of the class docstring).
        """
        if self._head is not None:
            raise HeadVocabularyError(f"label scoring needs the whole softmax, which the audio-head GGUF "
                                      f"{self.model_path} lacks: classify with the full GGUF")
        return label_logprobs(self, prompt_ids, candidates, batched)

    # ------------------------------------------------------------ decoding

    def generate(self, prompt_ids: Sequence[int], n_tokens: int, allowed: Allowed = None,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, stop_ids: Sequence[int] | None = None,
                 drafter=None, max_draft: int = 8) -> list[int]:
        """Decode up to ``n_tokens`` ids after ``prompt_ids`` under a per-step allowed-token mask.

        allowed: None (any id), one 1-D mask/index array for every step, a list (or a 2-D
        (steps, V) bool table, like the official out_mask) with one per step, or a callable
        ``step -> mask/index array``. Disallowed logits are set to -inf before
        argmax (temperature 0) or top-k/top-p sampling. Generation stops early only on an id in
        ``stop_ids`` (EOS is an ordinary token otherwise: ids 0-2 are legal audio tokens).
        drafter: a `runtime.draft` drafter; with temperature 0 its guesses (up to ``max_draft`` per
        pass) are verified in one batch each (`runtime.draft.draft_greedy`: still greedy decoding).
        Sampling always takes the plain one-token path.
        """
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        prompt = [int(i) for i in prompt_ids]
        self._check_ids(prompt)
        self._check_fits(len(prompt) + n_tokens, f"prompt ({len(prompt)}) + {n_tokens} generated")
        stops = frozenset(int(s) for s in stop_ids) if stop_ids else frozenset()
        if n_tokens == 0:
            return []
        mask_at = self._mask_fn(allowed)
        if drafter is not None and temperature <= 0.0 and max_draft > 0:
            from runtime.draft import draft_greedy

            return draft_greedy(self, prompt, n_tokens, mask_at, drafter, max_draft, stops)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        seq, out = list(prompt), []
        logits = self.logits(seq)
        for step in range(n_tokens):
            tok = select_token(logits, mask_at(step), temperature, top_k, top_p, rng)
            out.append(tok)
            if tok in stops or step == n_tokens - 1:
                break
            seq.append(tok)
            logits = self._eval_to(seq)
        return out

    def generate_many(self, prompts: Sequence[Sequence[int]], n_tokens: int, allowed: Allowed = None,
                      drafters: Sequence[Any] | None = None, max_draft: int = 8) -> list[list[int]]:
        """Masked greedy spans of ``n_tokens`` ids after each prompt, decoded side by side.

        Each prompt runs in its own KV sequence sharing the prompts' common prefix (cached once),
        and every round evaluates all spans' pending tokens and drafts in one ``llama_decode``
        (`runtime.lm_parallel`): per span the same greedy rule as `generate` with ``drafters[i]``
        (None: plain greedy). allowed: as in `generate`, the same step schedule for every span.
        Spans are grouped so the prefix plus each group's cells fit n_ctx and n_seq_max - 1
        sequences. Returns one list of n_tokens ids per prompt."""
        from runtime.lm_parallel import generate_many, shared_prefix

        prompts = [[int(t) for t in p] for p in prompts]
        drafters = list(drafters) if drafters is not None else [None] * len(prompts)
        if len(drafters) != len(prompts):
            raise ValueError(f"need one drafter per prompt: {len(prompts)}, got {len(drafters)}")
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        for p in prompts:
            if not p:
                raise ValueError("cannot decode after an empty prompt")
            self._check_ids(p)
            self._check_fits(len(p) + n_tokens, f"prompt ({len(p)}) + {n_tokens} generated")
        if n_tokens == 0 or not prompts:
            return [[] for _ in prompts]
        if len(prompts) == 1 or self.n_seq_max < 2:
            return [self.generate(p, n_tokens, allowed=allowed, drafter=d, max_draft=max_draft)
                    for p, d in zip(prompts, drafters)]
        mask_at = self._mask_fn(allowed)
        P = shared_prefix(prompts)
        own = max(len(p) for p in prompts) - P + n_tokens + max_draft + 1
        g = max(1, min(self.n_seq_max - 1, (self.n_ctx - P) // own))
        out: list[list[int]] = []
        for a in range(0, len(prompts), g):
            out += generate_many(self, prompts[a:a + g], n_tokens, mask_at, drafters[a:a + g], max_draft)
        return out

    def _mask_fn(self, allowed: Allowed):
        """``step -> mask`` (`step_mask`); on an audio-head GGUF each distinct mask is checked once to
        allow kept ids only, so masked choices are exactly the full model's."""
        if self._head is None:
            return lambda step: step_mask(allowed, step, self.n_vocab)
        head = self._head
        seen: dict[int, np.ndarray | None] = {}  # holds the checked masks, so a freed mask's id cannot be reused

        def checked(step: int):
            m = step_mask(allowed, step, self.n_vocab)
            if m is None or seen.get(id(m)) is not m:
                head.check_mask(m)
                seen[id(m)] = m
            return m
        return checked
