"""Shared machinery of the few-shot tasks: options, the codec + LLM engine, clips, masked spans.

Audio tokens in prompts are LLM ids: layer-1 codes map through the bundle's word table, layers 2-3
codes are the ids themselves (docs/design.md "Token maps"). Generated audio spans are decoded under a
per-step allowed-token mask that follows the span's layer schedule: layer-1 positions may only take
word-table ids, layer-2/3 positions the whole vocabulary (ids 0-2 included, so EOS never ends a span).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from runtime.audio import read_audio
from runtime.lm_errors import VocabularyMismatchError
from runtime.prompt import (AudioTokens, Demo, Layers, Layout, Prompt, Template, audio_span,
                            build_episode_prompt, span_layer_schedule, split_audio_span, tokens_per_group)

Crop = Literal["start", "loudest"]
DEFAULT_CLIP_SECONDS = {"classify": 1.0, "tts": 0.72, "text2sound": 1.0, "denoise": 0.96}
DRAFTS = ("auto", "ngram", "aligned", "none")


class TaskError(ValueError):
    """A task cannot run with these inputs/options (the message says what to change)."""


@dataclass(frozen=True)
class TaskOptions:
    """Prompt and decoding options shared by every task.

    shots: classify: demonstrations per label; generation tasks: demonstrations in total;
        None uses every demonstration of the set.
    repeats: times the demonstration block is written (the paper's "Repeats").
    layers: "semantic" (layer 1 only) or "all"; None picks the task default (classify: semantic,
        generation tasks: all, which they require to decode audio).
    clip_seconds: fixed clip duration (truncate/zero-pad) for prompt clips; None takes the demo
        set's ``info.json`` value, else the task default (`DEFAULT_CLIP_SECONDS`).
    crop: which part of a longer clip is kept: its "start" (official) or its "loudest" window.
    draft: greedy audio spans are decoded draft-and-verify (`runtime.draft`; same tokens as plain
        greedy decoding): "auto" (n-gram prompt lookup, else the query's own token), "ngram",
        "aligned" (the query's tokens at the same positions; denoise), or "none" (one token a step).
        Default "auto": on the default pair it decodes 1.3-1.9x the tokens/s of "none" on a 2-core
        CPU (benchmarks/results/llm_speed_tasks_t{1,2}.md, README "Draft decoding").
    max_draft: draft tokens verified per batch.
    parallel: spans decoded side by side where a task has several independent ones (denoise
        chunks of a file): one KV sequence each, one llama_decode per round for all of them
        (`runtime.lm_parallel`; greedy only). 1 = one span after another.
    """

    shots: int | None = None
    repeats: int = 1
    layers: Layers | None = None
    layout: Layout = "major"
    induction: bool = True
    temperature: float = 0.0
    seed: int = 0
    clip_seconds: float | None = None
    crop: Crop = "start"
    draft: str = "auto"
    max_draft: int = 8
    parallel: int = 4

    @property
    def seconds(self) -> float:
        """``clip_seconds`` after :meth:`with_defaults` (always set then)."""
        if self.clip_seconds is None:
            raise TaskError("TaskOptions.clip_seconds is unset: call with_defaults(task) first")
        return self.clip_seconds

    @property
    def layer_mode(self) -> Layers:
        """``layers`` after :meth:`with_defaults` (always set then)."""
        if self.layers is None:
            raise TaskError("TaskOptions.layers is unset: call with_defaults(task) first")
        return self.layers

    def with_defaults(self, task: str, demo_info: dict | None = None) -> "TaskOptions":
        """Fill ``layers`` and ``clip_seconds`` for ``task``; validate the rest."""
        layers = self.layers or ("semantic" if task == "classify" else "all")
        secs = self.clip_seconds
        if secs is None and demo_info and demo_info.get("clip_seconds"):
            secs = float(demo_info["clip_seconds"])
        secs = secs if secs is not None else DEFAULT_CLIP_SECONDS[task]
        opts = replace(self, layers=layers, clip_seconds=secs)
        opts.validate(task)
        return opts

    def validate(self, task: str) -> None:
        if self.shots is not None and self.shots < 1:
            raise TaskError(f"shots must be >= 1, got {self.shots}")
        if self.repeats < 1:
            raise TaskError(f"repeats must be >= 1, got {self.repeats}")
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise TaskError(f"clip seconds must be positive, got {self.clip_seconds}")
        if self.draft not in DRAFTS:
            raise TaskError(f"draft must be one of {DRAFTS}, got {self.draft!r}")
        if self.max_draft < 1:
            raise TaskError(f"max draft must be >= 1, got {self.max_draft}")
        if self.parallel < 1:
            raise TaskError(f"parallel spans must be >= 1, got {self.parallel}")
        if self.crop not in ("start", "loudest"):
            raise TaskError(f"crop must be 'start' or 'loudest', got {self.crop!r}")
        if task != "classify" and self.layers == "semantic":
            raise TaskError(f"{task} generates audio, which needs all three codec layers: use layers='all' "
                            "(layer 1 alone cannot be decoded)")


def crop_start(n_in: int, n_out: int, crop: Crop, pcm: np.ndarray | None = None, step: int = 160) -> int:
    """First sample of the kept window of length ``n_out`` in a clip of ``n_in`` samples."""
    if n_in <= n_out or crop == "start":
        return 0
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(pcm, dtype=np.float64) ** 2)])
    starts = np.arange(0, n_in - n_out + 1, step)
    return int(starts[np.argmax(energy[starts + n_out] - energy[starts])])


def fix_length(pcm: np.ndarray, n: int, crop: Crop = "start", start: int | None = None) -> np.ndarray:
    """Truncate (window from ``crop`` or ``start``) or zero-pad mono ``(m,)`` to ``(n,)`` float32."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    s = crop_start(len(pcm), n, crop, pcm) if start is None else start
    out = np.zeros(n, dtype=np.float32)
    seg = pcm[s:s + n]
    out[:len(seg)] = seg
    return out


class FewShotEngine:
    """A codec session and the frozen LLM whose vocabulary its codebooks were built from.

    lm: `runtime.lm.FrozenLM`; codec: `runtime.codec.CodecSession`. Refuses mismatched vocabularies.
    """

    def __init__(self, lm, codec) -> None:
        if lm.fingerprint != codec.fingerprint:
            raise VocabularyMismatchError(
                f"vocabulary mismatch: the LLM {lm.model_path} has vocabulary {lm.fingerprint} but the codec "
                f"bundle {codec.bundle.path} was built for {codec.fingerprint}; use the LLM whose embedding "
                "table the codec was trained on")
        self.lm, self.codec = lm, codec
        self.sample_rate = int(codec.sample_rate)
        self.group_samples = int(codec.group_frames * codec.hop)
        # One allowed-token mask per codec layer, from the bundle's token tables (never "code = id").
        self.layer_masks = [codec.layer_mask(l, lm.n_vocab) for l in range(1, len(codec.strides) + 1)]
        # classify --method calibrated: silent-query tokens per length and label priors per prompt
        self.prior_cache: dict[tuple, Any] = {}
        try:  # the prompt layout follows the bundle's VQ strides, not a hard-coded 1/2/4
            self.per_group = tokens_per_group(codec.strides)
        except ValueError as e:
            raise TaskError(f"codec bundle {codec.bundle.path}: {e}") from None
        self.word_mask = self.layer_masks[0]
        self._memo: dict[str, list[int]] = {}
        # Opens the full GGUF when ``lm`` is an audio head and a prompt needs dropped ids (`open_engine`).
        self.full_model: Callable[[], Any] | None = None

    # -- text and clips -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """The LLM's own tokenizer (no BOS), memoised: prompts re-encode the same strings often."""
        if text not in self._memo:
            self._memo[text] = self.lm.tokenize_text(text)
        return self._memo[text]

    def samples(self, seconds: float) -> int:
        return int(round(seconds * self.sample_rate))

    def groups_for(self, n_samples: int) -> int:
        """Codec groups covering ``n_samples`` (the encoder zero-pads the last one)."""
        return -(-max(n_samples, 1) // self.group_samples)

    def load_clip(self, path: str | Path, seconds: float, crop: Crop = "start") -> np.ndarray:
        """An audio file as mono float32 at the codec rate, cut/padded to ``seconds``."""
        return fix_length(read_audio(path, self.sample_rate), self.samples(seconds), crop)

    def clip_tokens(self, pcm: np.ndarray) -> AudioTokens:
        """Offline-encode a clip ``(n,)`` and map its codes to LLM ids (fresh codec state)."""
        return self.codes_to_tokens(self.codec.encode(pcm))

    def codes_to_tokens(self, codes: Sequence[np.ndarray]) -> AudioTokens:
        return AudioTokens(*(self.codec.code_to_token(l, c).tolist() for l, c in enumerate(codes, start=1)))

    def tokens_to_codes(self, tokens: AudioTokens) -> list[np.ndarray]:
        return [self.codec.token_to_code(l, np.asarray(t, dtype=np.int64)) for l, t in enumerate(tokens, start=1)]

    def decode(self, tokens: AudioTokens, n_samples: int) -> np.ndarray:
        """Offline-decode generated tokens to mono float32, trimmed/padded to ``n_samples``."""
        return fix_length(self.codec.decode(self.tokens_to_codes(tokens)), n_samples)

    # -- prompts and generation ------------------------------------------------------------------
    def prompt(self, demos: Sequence[Demo], query, opts: TaskOptions, instruction: str | None,
               reserve: int, template: Template = Template()) -> Prompt:
        """Episode ids; raises ContextOverflowError (saying how many demonstrations fit) if too long."""
        p = build_episode_prompt(self.tokenize, demos, query, instruction=instruction if opts.induction else None,
                                 bos_id=self.lm.bos_id, layout=opts.layout, layers=opts.layer_mode,
                                 repeats=opts.repeats, template=template, n_ctx=self.lm.n_ctx,
                                 reserve=reserve, per_group=self.per_group)
        if not self.lm.covers(p.ids):
            self._use_full_model()
        return p

    def _use_full_model(self) -> None:
        """Switch from an audio-head GGUF to the full model (a prompt's text needs dropped ids)."""
        import warnings

        if self.full_model is None:
            raise TaskError(f"the prompt uses token ids the audio-head GGUF {self.lm.model_path} lacks: "
                            "open the full GGUF instead")
        warnings.warn(f"the prompt's text uses tokens the audio head {self.lm.model_path.name} lacks: "
                      "switching to the full model (same tokens, slower)", RuntimeWarning, stacklevel=3)
        self.lm, self.full_model = self.full_model(), None

    def span_allowed(self, n_groups: int, layout: Layout, layers: Layers) -> Callable[[int], np.ndarray]:
        """Per-step allowed mask ``step -> (V,) bool`` for a span of ``n_groups`` groups."""
        sched = span_layer_schedule(n_groups, layout, layers, self.per_group)
        return lambda step: self.layer_masks[sched[step] - 1]

    def span_length(self, n_groups: int, opts: TaskOptions) -> int:
        return len(span_layer_schedule(n_groups, opts.layout, opts.layer_mode, self.per_group))

    def use_prefix(self, prompt: Prompt) -> None:
        """Keep ``prompt``'s fixed prefix (instruction + demonstrations) in the LLM's KV cache,
        evaluated once per engine (or read from the LLM's on-disk prefix cache)."""
        prefix = prompt.prefix
        if prompt.prefix_len > 2 and (self.lm.prefix_ids != prefix or self.lm.cached_ids[:len(prefix)] != prefix):
            self.lm.eval_prefix(prefix)

    def generate_span(self, prompt_ids: Sequence[int], n_groups: int, opts: TaskOptions,
                      seed: int | None = None, query: AudioTokens | None = None) -> AudioTokens:
        """Exactly the tokens of ``n_groups`` groups after ``prompt_ids``, masked per layer.

        Greedy spans are decoded draft-and-verify (``opts.draft``); ``query``: the input clip's
        tokens (denoise), whose span in the same layout feeds the "aligned"/"auto" drafters."""
        n = self.span_length(n_groups, opts)
        ids = self.lm.generate(prompt_ids, n, allowed=self.span_allowed(n_groups, opts.layout, opts.layer_mode),
                               temperature=opts.temperature, seed=opts.seed if seed is None else seed,
                               drafter=self._drafter(n, opts, query), max_draft=opts.max_draft)
        return self._split(ids, n, n_groups, opts)

    def generate_spans(self, prompts: Sequence[Sequence[int]], n_groups: int, opts: TaskOptions,
                       queries: Sequence[AudioTokens | None], seeds: Sequence[int]) -> list[AudioTokens]:
        """`generate_span` for several prompts at once: greedy spans are decoded side by side
        (`FrozenLM.generate_many`, the same greedy rule per span); sampled ones one after another,
        prompt i with seed ``seeds[i]``."""
        if opts.temperature > 0.0 or len(prompts) == 1:
            return [self.generate_span(p, n_groups, opts, seed=s, query=q) for p, q, s in zip(prompts, queries, seeds)]
        n = self.span_length(n_groups, opts)
        drafters = [self._drafter(n, opts, q) for q in queries]
        spans = self.lm.generate_many(prompts, n, allowed=self.span_allowed(n_groups, opts.layout, opts.layer_mode),
                                      drafters=drafters, max_draft=opts.max_draft)
        return [self._split(ids, n, n_groups, opts) for ids in spans]

    def _drafter(self, n: int, opts: TaskOptions, query: AudioTokens | None):
        from runtime.draft import span_drafter

        qspan = audio_span(query, opts.layout, opts.layer_mode, self.per_group) if query is not None else None
        if opts.draft == "aligned" and (qspan is None or len(qspan) != n):
            raise TaskError("draft 'aligned' needs a query clip of the span's length (the denoise task)")
        return span_drafter(opts.draft, qspan if qspan is not None and len(qspan) == n else None)

    def _split(self, ids: list[int], n: int, n_groups: int, opts: TaskOptions) -> AudioTokens:
        if len(ids) != n:  # generate() stops early only on stop_ids, which we never pass
            raise TaskError(f"the LLM returned {len(ids)} tokens, expected {n}")
        return split_audio_span(ids, opts.layout, opts.layer_mode, n_groups, self.per_group)


def open_engine(model: str | Path, codec: str | Path, n_ctx: int = 2048, threads: int | None = None,
                seed: int = 0, provider: str = "cpu", n_gpu_layers: int = 0,
                prefix_cache: bool | str | Path = False, audio_head: bool = False) -> FewShotEngine:
    """Load the codec bundle, then the GGUF checked against the bundle's vocabulary fingerprint.

    n_gpu_layers: LLM layers offloaded to the GPU (llama-cpp-python built with CUDA; 0 = CPU).
    prefix_cache: True (default cache dir), a cache root folder, or False: demonstration prefixes'
    KV states on disk (`runtime.prefix_cache`), so a second run starts without evaluating them.
    audio_head: run the model's audio-head GGUF (`runtime.lm_head.head_path`) when it exists and
    keeps this bundle's token tables (same masked decoding, a 7x smaller output head); prompts
    with text it lacks switch the engine to ``model`` itself (`FewShotEngine.prompt`)."""
    from runtime.codec import CodecSession
    from runtime.lm import FrozenLM

    session = CodecSession(codec, provider=provider, threads=threads)
    kwargs: dict[str, Any] = dict(n_ctx=n_ctx, n_threads=threads, seed=seed, n_gpu_layers=n_gpu_layers,
                                  expected_fingerprint=session.fingerprint, expected_source=f"codec bundle {codec}")
    cache = None
    if prefix_cache is not False and prefix_cache is not None:
        from runtime.prefix_cache import PrefixCache

        cache = PrefixCache(None if prefix_cache is True else prefix_cache)

    def open_full() -> FrozenLM:
        full = FrozenLM(model, **kwargs)
        full.prefix_cache = cache
        return full

    head = _open_audio_head(model, session, kwargs) if audio_head else None
    if head is not None:
        head.prefix_cache = cache
    engine = FewShotEngine(open_full() if head is None else head, session)
    engine.full_model = None if head is None else open_full
    return engine


def _open_audio_head(model: str | Path, session, kwargs: dict):
    """The audio-head `FrozenLM` of ``model`` if one exists and serves this bundle, else None (a stale
    or damaged one is reported with a warning: the full model still gives the same tokens)."""
    import warnings

    from runtime.lm import FrozenLM, ModelLoadError
    from runtime.lm_head import head_path

    path = head_path(model)
    if not path.is_file():
        return None
    try:
        lm = FrozenLM(path, **kwargs)
    except (ModelLoadError, VocabularyMismatchError, ValueError) as e:
        warnings.warn(f"not using the audio head: {e}", RuntimeWarning, stacklevel=3)
        return None
    missing = [l for l in range(1, len(session.strides) + 1) if not lm.covers_mask(session.layer_mask(l, lm.n_vocab))]
    if missing:
        warnings.warn(f"not using the audio head {path}: it lacks token ids of codec layer(s) {missing} "
                      f"(rebuild it for this bundle: python -m runtime.lm_head)", RuntimeWarning, stacklevel=3)
        return None
    return lm
