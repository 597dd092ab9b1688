"""Few-shot text-to-speech (paper §5.2): input text -> audio tokens of the demonstrated length -> wav.

Demonstrations pair a text ("an audio of 3") with a clip; every clip is cut/padded to the same
duration (``opts.seconds``), so the answer length is known: the LLM generates exactly that many
groups' tokens under the per-layer masks (no EOS stop inside audio), which map back to codes and
are decoded by the codec. The query text is used verbatim ("an audio of (1+1)").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.prompt import TTS_INSTRUCTION, AudioTokens, Demo
from runtime.tasks.common import FewShotEngine, TaskError, TaskOptions
from runtime.tasks.demos import DemoSet


@dataclass(frozen=True)
class GenerationResult:
    """pcm: mono float32 at the codec rate; tokens: the generated span split per layer."""

    pcm: np.ndarray
    tokens: AudioTokens
    prompt_tokens: int


def text_to_audio(engine: FewShotEngine, pairs: Sequence[tuple[str, Path]], text: str, opts: TaskOptions,
                  instruction: str | None) -> GenerationResult:
    """Generate the clip for ``text`` from (text, clip path) demonstrations; ``opts`` complete."""
    text = text.strip()
    if not text:
        raise TaskError("the input text is empty")
    n = engine.samples(opts.seconds)
    demos = [Demo(t, engine.clip_tokens(engine.load_clip(p, opts.seconds, opts.crop))) for t, p in pairs]
    n_groups = engine.groups_for(n)
    prompt = engine.prompt(demos, text, opts, instruction, reserve=engine.span_length(n_groups, opts))
    engine.use_prefix(prompt)
    tokens = engine.generate_span(prompt.ids, n_groups, opts)
    return GenerationResult(engine.decode(tokens, n), tokens, len(prompt.ids))


def tts(engine: FewShotEngine, demo_set: DemoSet, text: str, opts: TaskOptions = TaskOptions()) -> GenerationResult:
    """Speak ``text`` in the style of the demonstrations (``opts.shots`` first rows, all if None)."""
    opts = opts.with_defaults("tts", demo_set.info)
    rows = demo_set.select_first(opts.shots)
    return text_to_audio(engine, [(r.string("text"), r.path("output")) for r in rows], text, opts, TTS_INSTRUCTION)
