"""The per-chunk work of ``runtime.stream``: one processor per task, timed stage by stage.

Audio processors take chunks of whole codec groups at the codec rate and return the processed
chunk (same length), so output files stay sample-aligned with the input:

* ``CodecProcessor`` — the pure codec round trip: a continuous ``CodecStream`` encodes each chunk
  (encoder graphs, then the nearest-codeword search) and decodes its groups. Its codes equal offline
  ``CodecSession.encode`` of the whole input (the tail is zero-padded to a group either way).
* ``DenoiseProcessor`` — ``runtime.tasks.denoise`` chunk by chunk: the same continuous encoder and
  decoder streams, prompt, seeds and masks as ``denoise_pcm``, so greedy decoding gives the same
  tokens as ``runtime.run --task denoise`` on the same input.
* ``ClassifyProcessor`` — a sliding window: every hop, the last ``window`` samples are encoded
  offline (fresh state, as ``runtime.run --task classify`` encodes a clip) and classified.
* ``TextToAudio`` — tts / text2sound: one prompt per line of text, demonstrations encoded once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

from runtime.codec_stream import CodecStream, GroupCodes, join_groups
from runtime.prompt import TTS_INSTRUCTION, AudioTokens, Demo, Prompt
from runtime.stream_stats import StreamStats
from runtime.tasks.common import FewShotEngine, TaskOptions, fix_length

T = TypeVar("T")


def timed_encode(stream: CodecStream, pcm: np.ndarray, stats: StreamStats, flush: bool = False) -> list[GroupCodes]:
    """``stream.encode(pcm)`` (+ ``flush()``), recording the search and the rest as "encode"."""
    searched = stream.search_seconds
    t0 = time.perf_counter()
    groups = stream.encode(pcm) + (stream.flush() if flush else [])
    searched = stream.search_seconds - searched
    stats.add("encode", time.perf_counter() - t0 - searched)
    stats.add("search", searched)
    return groups


class CodecProcessor:
    """Encode -> search -> decode through one continuous codec stream; ``chunk`` = groups x 1920."""

    def __init__(self, session, chunk_groups: int = 1) -> None:
        self.session = session
        self.stream = session.new_stream()
        self.chunk = int(chunk_groups) * session.group_frames * session.hop
        self.codes: list[GroupCodes] = []  # every group's codes, for callers that check them

    def process(self, pcm: np.ndarray, stats: StreamStats) -> np.ndarray:
        """A chunk ``(chunk,)`` -> its round trip ``(chunk,)``."""
        return self._round_trip(pcm, stats, flush=False)

    def flush(self, tail: np.ndarray, stats: StreamStats) -> np.ndarray:
        """The last ``(m,)`` samples (m < chunk): zero-padded to a group, decoded, trimmed to ``m``."""
        if len(tail) == 0:
            return np.zeros(0, dtype=np.float32)
        return self._round_trip(tail, stats, flush=True)[:len(tail)]

    def _round_trip(self, pcm: np.ndarray, stats: StreamStats, flush: bool) -> np.ndarray:
        groups = timed_encode(self.stream, pcm, stats, flush)
        self.codes.extend(groups)
        with stats.time("decode"):
            return self.stream.decode(groups) if groups else np.zeros(0, dtype=np.float32)


class DenoiseProcessor:
    """Few-shot denoising per chunk of ``g`` groups (the demonstrations' length)."""

    def __init__(self, engine: FewShotEngine, demos: Sequence[Demo], opts: TaskOptions) -> None:
        from runtime.tasks.denoise import chunk_groups

        self.engine, self.demos, self.opts = engine, list(demos), opts
        self.groups = chunk_groups(engine, opts.seconds)
        self.chunk = self.groups * engine.group_samples
        self.enc, self.dec = engine.codec.new_stream(), engine.codec.new_stream()
        self.index = 0
        self.tokens: list[AudioTokens] = []  # generated per chunk, for callers that check them
        self.parallel = opts.parallel  # chunks decoded side by side when several are waiting

    def process_many(self, chunks: Sequence[np.ndarray], stats: StreamStats) -> list[np.ndarray]:
        """Whole chunks that were waiting together: encoded in order, their spans decoded side by
        side (`FewShotEngine.generate_spans`; "llm_generate" then includes the queries' prefill)."""
        e, opts = self.engine, self.opts
        pairs = [self._query(c, stats) for c in chunks]
        e.use_prefix(pairs[0][1])
        seeds = [opts.seed + self.index + i for i in range(len(chunks))]
        spans = timed_generation(e, stats, len(chunks) * e.span_length(self.groups, opts), lambda: e.generate_spans(
            [p.ids for _, p in pairs], self.groups, opts, [q for q, _ in pairs], seeds))
        self.index += len(chunks)
        self.tokens += spans
        return [self._decode(t, stats) for t in spans]

    def _query(self, pcm: np.ndarray, stats: StreamStats) -> tuple[AudioTokens, Prompt]:
        from runtime.tasks.denoise import INSTRUCTION

        e, opts = self.engine, self.opts
        query = e.codes_to_tokens(join_groups(timed_encode(self.enc, pcm, stats), 3))
        return query, e.prompt(self.demos, query, opts, INSTRUCTION, reserve=e.span_length(self.groups, opts))

    def _decode(self, tokens: AudioTokens, stats: StreamStats) -> np.ndarray:
        with stats.time("decode"):
            return self.dec.decode(self.engine.tokens_to_codes(tokens))

    def process(self, pcm: np.ndarray, stats: StreamStats) -> np.ndarray:
        query, prompt = self._query(pcm, stats)
        tokens = generate_timed(self.engine, prompt, self.groups, self.opts, self.opts.seed + self.index, stats,
                                query=query)
        self.index += 1
        self.tokens.append(tokens)
        return self._decode(tokens, stats)

    def flush(self, tail: np.ndarray, stats: StreamStats) -> np.ndarray:
        if len(tail) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.process(fix_length(tail, self.chunk), stats)[:len(tail)]

    def warm_up(self) -> int:
        """Evaluate the instruction + demonstrations once, before live audio arrives."""
        from runtime.tasks.denoise import INSTRUCTION

        e, opts = self.engine, self.opts
        return warm_prefix(e, lambda q: e.prompt(self.demos, q, opts, INSTRUCTION,
                                                 reserve=e.span_length(self.groups, opts)), self.chunk)


def warm_prefix(engine: FewShotEngine, make_prompt: Callable[[AudioTokens], Prompt], n: int) -> int:
    """Put a task's fixed prompt prefix (instruction + demonstrations) into the LLM's KV cache, from
    the on-disk prefix cache when the LLM has one; returns its length in tokens.

    The prefix is the one every chunk's prompt starts with (built here around a silent query of
    ``n`` samples, encoded offline so no stream state moves). Without this, the first live chunk
    pays for the whole demonstration block (seconds with a real LLM) and the stream starts behind."""
    prompt = make_prompt(engine.clip_tokens(np.zeros(n, dtype=np.float32)))
    engine.use_prefix(prompt)
    return prompt.prefix_len


def generate_timed(engine: FewShotEngine, prompt: Prompt, n_groups: int, opts: TaskOptions,
                   seed: int, stats: StreamStats, query: AudioTokens | None = None) -> AudioTokens:
    """``engine.generate_span`` with the prompt evaluated first (timed as "llm_prefill"): the LLM's
    prefix cache makes the generation's own first evaluation free, so "llm_generate" is decoding
    (draft-and-verify, ``query`` feeding the drafter)."""
    with stats.time("llm_prefill"):
        engine.use_prefix(prompt)
        engine.lm.logits(prompt.ids)
    return timed_generation(engine, stats, engine.span_length(n_groups, opts),
                            lambda: engine.generate_span(prompt.ids, n_groups, opts, seed=seed, query=query))


def timed_generation(engine: FewShotEngine, stats: StreamStats, n_tokens: int, run: Callable[[], T]) -> T:
    """``run()`` timed as "llm_generate", with its ``n_tokens`` and draft counts added to ``stats``."""
    lm_stats = engine.lm.stats
    proposed, accepted = lm_stats.draft_proposed, lm_stats.draft_accepted
    t0 = time.perf_counter()
    out = run()
    dt = time.perf_counter() - t0
    stats.add("llm_generate", dt)
    stats.llm_tokens += n_tokens
    stats.llm_generate_s += dt
    stats.draft_proposed += lm_stats.draft_proposed - proposed
    stats.draft_accepted += lm_stats.draft_accepted - accepted
    return out


@dataclass(frozen=True)
class WindowLabel:
    """One classified window: [start_s, end_s) of the input, the label and every label's log-prob."""

    start_s: float
    end_s: float
    label: str | None
    logprobs: dict[str, float]
    latency_ms: float


class ClassifyProcessor:
    """Sliding-window classification: ``chunk`` = hop; each full window emits one ``WindowLabel``."""

    def __init__(self, engine: FewShotEngine, demos: Sequence[Demo], opts: TaskOptions, window: int, hop: int,
                 emit: Callable[[WindowLabel], None], method: str = "score") -> None:
        self.engine, self.demos, self.opts, self.method = engine, list(demos), opts, method
        self.window, self.chunk, self.emit = int(window), int(hop), emit
        self.history = np.zeros(0, dtype=np.float32)  # at most `window` samples
        self.seen = 0
        self.emitted = 0

    def process(self, pcm: np.ndarray, stats: StreamStats) -> None:
        self.history = np.concatenate([self.history, pcm])[-self.window:]
        self.seen += len(pcm)
        if self.seen >= self.window:
            self._classify(self.history, self.seen - self.window, stats)

    def flush(self, tail: np.ndarray, stats: StreamStats) -> None:
        """End of input: a stream shorter than one window is classified once, zero-padded."""
        self.seen += len(tail)
        self.history = np.concatenate([self.history, tail])[-self.window:]
        if self.emitted == 0 and self.seen > 0:
            self._classify(self.history, 0, stats)

    def warm_up(self) -> int:
        """Evaluate the instruction + demonstrations once, before live audio arrives."""
        from runtime.prompt import classification_instruction, label_candidates

        e, opts = self.engine, self.opts
        labels = sorted({str(d.output) for d in self.demos})
        reserve = max(len(c) for c in label_candidates(e.tokenize, labels)) + 1
        return warm_prefix(e, lambda q: e.prompt(self.demos, q, opts, classification_instruction(labels),
                                                 reserve=reserve), e.samples(opts.seconds))

    def _classify(self, pcm: np.ndarray, start: int, stats: StreamStats) -> None:
        from runtime.tasks.classify import classify_tokens

        t0 = time.perf_counter()
        e = self.engine
        with stats.time("encode"):
            query = e.clip_tokens(fix_length(pcm, e.samples(self.opts.seconds), self.opts.crop))
        with stats.time("llm_prefill"):
            r = classify_tokens(e, self.demos, query, self.opts, self.method)
        rate = e.sample_rate
        self.emitted += 1
        self.emit(WindowLabel(start / rate, (start + len(pcm)) / rate, r.label, r.logprobs,
                              (time.perf_counter() - t0) * 1000.0))


def classify_demos(engine: FewShotEngine, demo_set, opts: TaskOptions) -> list[Demo]:
    """The classify task's demonstrations (``opts.shots`` per label), clips cut to ``opts.seconds``."""
    rows = demo_set.select_per_label(opts.shots)
    return [Demo(engine.clip_tokens(engine.load_clip(r.input, opts.seconds, opts.crop)), r.label)
            for r in rows]


def denoise_demos(engine: FewShotEngine, demo_set, opts: TaskOptions) -> list[Demo]:
    """The denoise task's (noisy, clean) demonstrations, as ``runtime.tasks.denoise.denoise`` builds them."""
    from runtime.tasks.denoise import pair_demos

    return pair_demos(engine, [(r.input, r.output) for r in demo_set.select_first(opts.shots)], opts)


class TextToAudio:
    """tts / text2sound: demonstrations encoded once, then one generated clip per text line."""

    def __init__(self, engine: FewShotEngine, demo_set, opts: TaskOptions, task: str) -> None:
        from runtime.tasks import text2sound

        self.engine, self.opts, self.task = engine, opts, task
        rows = demo_set.select_first(opts.shots)
        if task == "tts":
            pairs, self.instruction = [(r.text, r.output) for r in rows], TTS_INSTRUCTION
        else:
            pairs = [(r.text or text2sound.label_text(r.label), r.output) for r in rows]
            self.instruction = text2sound.INSTRUCTION
        self.demos = [Demo(t, engine.clip_tokens(engine.load_clip(p, opts.seconds, opts.crop)))
                      for t, p in pairs]
        self.samples = engine.samples(opts.seconds)
        self.groups = engine.groups_for(self.samples)

    def query_text(self, line: str) -> str:
        from runtime.tasks import text2sound
        from runtime.tasks.common import TaskError

        text = line.strip()
        if not text:
            raise TaskError("the input text is empty")
        return text2sound.label_text(text) if self.task == "text2sound" else text

    def speak(self, line: str, stats: StreamStats) -> np.ndarray:
        """The clip ``(samples,)`` for one line of text (as ``runtime.run`` generates it)."""
        e, opts = self.engine, self.opts
        prompt = e.prompt(self.demos, self.query_text(line), opts, self.instruction,
                          reserve=e.span_length(self.groups, opts))
        tokens = generate_timed(e, prompt, self.groups, opts, opts.seed, stats)
        with stats.time("decode"):
            return e.decode(tokens, self.samples)
