"""Few-shot denoising (paper §5.2): noisy audio -> clean audio, chunk by chunk, same length as the input.

Demonstrations are (noisy, clean) pairs cut to one fixed chunk of whole codec groups
(``opts.seconds`` rounded up to groups of 120 ms; 0.96 s = 8 groups by default). The input
is split into chunks of that length (the last one zero-padded); each chunk is encoded by a
continuous codec stream, its tokens go into the prompt after the demonstration prefix (whose KV
cache the LLM keeps between chunks, and reads from its on-disk prefix cache when it has one), the
LLM generates the clean chunk's tokens under the per-layer masks (draft-and-verify, drafts from
prompt lookup and the noisy chunk's own tokens; ``opts.parallel`` chunks side by side, each in its
own KV sequence, `runtime.lm_parallel`), and a continuous decoder stream turns them into audio.
The output is trimmed to the input's length.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np

from runtime.audio import read_audio
from runtime.codec_stream import join_groups
from runtime.prompt import AudioTokens, Demo, Prompt
from runtime.tasks.common import Crop, FewShotEngine, TaskError, TaskOptions, crop_start, fix_length
from runtime.tasks.demos import DemoSet

INSTRUCTION = "Please denoise the last noisy input\n"


@dataclass(frozen=True)
class DenoiseResult:
    """pcm: mono float32 (n,) at the codec rate, n = the input length; chunks: LLM calls made."""

    pcm: np.ndarray
    chunks: int
    chunk_samples: int
    prompt_tokens: int


def chunk_groups(engine: FewShotEngine, seconds: float) -> int:
    return engine.groups_for(engine.samples(seconds))


def load_pair(engine: FewShotEngine, noisy: Path, clean: Path, n: int, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
    """A (noisy, clean) pair cut to ``n`` samples at the same position (chosen on the clean clip)."""
    x, y = read_audio(noisy, engine.sample_rate), read_audio(clean, engine.sample_rate)
    start = crop_start(min(len(x), len(y)), n, crop, y[:len(x)])
    return fix_length(x, n, start=start), fix_length(y, n, start=start)


def pair_demos(engine: FewShotEngine, pairs: Sequence[tuple[Path, Path]], opts: TaskOptions) -> list[Demo]:
    n = chunk_groups(engine, opts.seconds) * engine.group_samples
    out = []
    for noisy, clean in pairs:
        x, y = load_pair(engine, noisy, clean, n, opts.crop)
        out.append(Demo(engine.clip_tokens(x), engine.clip_tokens(y)))
    return out


def chunk_prompts(engine: FewShotEngine, demos: Sequence[Demo], pcm: np.ndarray,
                  opts: TaskOptions) -> Iterator[tuple[Prompt, AudioTokens]]:
    """(prompt, query tokens) per chunk of mono ``pcm`` (n,), encoded by one continuous codec stream."""
    g = chunk_groups(engine, opts.seconds)
    n = g * engine.group_samples
    enc = engine.codec.new_stream()
    for start in range(0, len(pcm), n):
        query = engine.codes_to_tokens(join_groups(enc.encode(fix_length(pcm[start:start + n], n)), 3))
        yield engine.prompt(demos, query, opts, INSTRUCTION, reserve=engine.span_length(g, opts)), query


def _batches(items: Iterator, size: int) -> Iterator[list]:
    """``items`` in lists of up to ``size`` (the last one shorter)."""
    batch: list = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def denoise_pcm(engine: FewShotEngine, demos: Sequence[Demo], pcm: np.ndarray, opts: TaskOptions) -> DenoiseResult:
    """Denoise mono ``pcm`` (n,) with token demonstrations; ``opts`` complete."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if pcm.size == 0:
        raise TaskError("the input audio is empty")
    g = chunk_groups(engine, opts.seconds)
    spans = [(d.input, d.output) for d in demos if isinstance(d.input, AudioTokens) and isinstance(d.output, AudioTokens)]
    if len(spans) != len(demos):
        raise TaskError("denoise demonstrations must be audio -> audio")
    bad = [x.n_groups for x, y in spans if x.n_groups != g or y.n_groups != g]
    if bad:
        raise TaskError(f"denoise demonstrations must all be {g} groups long (got {bad[0]})")
    dec = engine.codec.new_stream()
    out: list[np.ndarray] = []
    prompt_len = 0
    for batch in _batches(chunk_prompts(engine, demos, pcm, opts), opts.parallel):
        engine.use_prefix(batch[0][0])
        seeds = [opts.seed + len(out) + i for i in range(len(batch))]  # chunk i's seed, as one at a time
        for tokens in engine.generate_spans([p.ids for p, _ in batch], g, opts, [q for _, q in batch], seeds):
            out.append(dec.decode(engine.tokens_to_codes(tokens)))
        prompt_len = len(batch[-1][0].ids)
    return DenoiseResult(np.concatenate(out)[:len(pcm)], len(out), g * engine.group_samples, prompt_len)


def denoise(engine: FewShotEngine, demo_set: DemoSet, audio: Union[str, Path, np.ndarray],
            opts: TaskOptions = TaskOptions()) -> DenoiseResult:
    """Denoise an audio file or mono pcm at the codec rate with noisy -> clean demonstrations."""
    opts = opts.with_defaults("denoise", demo_set.info)
    rows = demo_set.select_first(opts.shots)
    demos = pair_demos(engine, [(r.path("input"), r.path("output")) for r in rows], opts)
    pcm = read_audio(audio, engine.sample_rate) if isinstance(audio, (str, Path)) else audio
    return denoise_pcm(engine, demos, pcm, opts)
