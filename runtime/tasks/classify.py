"""N-way K-shot audio classification by in-context learning on the frozen LLM.

The prompt ends after "Output: " (runtime.prompt layout). ``method="score"`` scores every candidate
label's token ids with `FrozenLM.label_logprobs` (the demonstration prefix is evaluated once per
engine, the query once, then all labels in one batch, one KV sequence each) and returns the argmax.
``method="greedy"`` is the official decoder:
greedy with a per-step mask allowing the j-th token of any label (+EOS), matched back to a label;
``method="calibrated"`` scores like "score", then subtracts each label's log-probability after a silent
query (contextual calibration: the prompt's label prior). Raw log-probabilities are reported either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from runtime.prompt import AudioTokens, Demo, classification_instruction, label_candidates, label_step_masks
from runtime.tasks.common import FewShotEngine, TaskError, TaskOptions, fix_length
from runtime.tasks.demos import DemoSet

Query = Union[str, Path, np.ndarray, AudioTokens]
METHODS = ("score", "greedy", "calibrated")


@dataclass(frozen=True)
class ClassifyResult:
    """label: the prediction (None only if greedy decoding produced no label);
    logprobs: log P(label tokens | prompt) per label, sorted labels; prompt_tokens: prompt length."""

    label: str | None
    logprobs: dict[str, float]
    prompt_tokens: int
    method: str = "score"
    generated: list[int] = field(default_factory=list)


def classify_tokens(engine: FewShotEngine, demos: Sequence[Demo], query: AudioTokens, opts: TaskOptions,
                    method: str = "score") -> ClassifyResult:
    """Classify a query already in tokens, given demonstrations ``Demo(AudioTokens, label)``.

    ``opts`` must be complete (`TaskOptions.with_defaults`)."""
    if method not in METHODS:
        raise TaskError(f"method must be one of {METHODS}, got {method!r}")
    labels = sorted({str(d.output) for d in demos})
    if len(labels) < 2:
        raise TaskError(f"classification needs demonstrations of at least 2 labels, got {labels}")
    cands = label_candidates(engine.tokenize, labels)
    prompt = engine.prompt(demos, query, opts, classification_instruction(labels),
                           reserve=max(len(c) for c in cands) + (1 if method == "greedy" else 0))
    engine.use_prefix(prompt)
    lps = engine.lm.label_logprobs(prompt.ids, cands)
    logprobs = {lab: float(v) for lab, v in zip(labels, lps)}
    if method == "score":
        return ClassifyResult(labels[int(np.argmax(lps))], logprobs, len(prompt.ids))
    if method == "calibrated":
        shift = _content_free_logprobs(engine, demos, query.n_groups, opts, labels, cands)
        return ClassifyResult(labels[int(np.argmax(lps - shift))], logprobs, len(prompt.ids), "calibrated")
    gen = _constrained_greedy(engine, prompt.ids, labels, cands)
    return ClassifyResult(_match_label(gen, labels, cands), logprobs, len(prompt.ids), "greedy", gen)


def _content_free_logprobs(engine: FewShotEngine, demos: Sequence[Demo], n_groups: int, opts: TaskOptions,
                           labels: list[str], cands: list[list[int]]) -> np.ndarray:
    """Label log-probs after a silent query of the same length: the prompt's label prior, which
    contextual calibration (Zhao et al. 2021, "Calibrate before use") subtracts from the query's scores;
    it removes the bias towards short or recent labels that raw sums of token log-probs carry."""
    if ("silent", n_groups) not in engine.prior_cache:  # encode the silent clip once per length
        engine.prior_cache[("silent", n_groups)] = engine.clip_tokens(np.zeros(n_groups * engine.group_samples,
                                                                               dtype=np.float32))
    silent = engine.prior_cache[("silent", n_groups)]
    prompt = engine.prompt(demos, silent, opts, classification_instruction(labels),
                           reserve=max(len(c) for c in cands))
    key = (tuple(prompt.ids), tuple(tuple(c) for c in cands))
    if key not in engine.prior_cache:  # the prior depends on the demonstrations only: once per set
        engine.prior_cache[key] = np.asarray(engine.lm.label_logprobs(prompt.ids, cands), dtype=np.float64)
    return engine.prior_cache[key]


def _constrained_greedy(engine: FewShotEngine, ids: list[int], labels: list[str],
                        cands: list[list[int]]) -> list[int]:
    lm = engine.lm
    n = max(len(c) for c in cands) + 1
    masks = label_step_masks(engine.tokenize, labels, lm.n_vocab, lm.eos_id, n_steps=n)
    return lm.generate(ids, n, allowed=masks, temperature=0.0, stop_ids=[lm.eos_id])


def _match_label(gen: list[int], labels: list[str], cands: list[list[int]]) -> str | None:
    """The longest label whose tokens start the generated ids (the official prefix test)."""
    hits = [(len(c), lab) for lab, c in zip(labels, cands) if gen[:len(c)] == c]
    return max(hits)[1] if hits else None


def classify(engine: FewShotEngine, demo_set: DemoSet, query: Query, opts: TaskOptions = TaskOptions(),
             method: str = "score") -> ClassifyResult:
    """Classify ``query`` (audio path, mono pcm at the codec rate, or tokens) with ``demo_set``.

    Uses ``opts.shots`` demonstrations per label (all if None), clips cut to ``opts.seconds``.
    """
    opts = opts.with_defaults("classify", demo_set.info)
    rows = demo_set.select_per_label(opts.shots)
    demos = [Demo(engine.clip_tokens(engine.load_clip(r.path("input"), opts.seconds, opts.crop)), r.string("label"))
             for r in rows]
    return classify_tokens(engine, demos, query_tokens(engine, query, opts), opts, method)


def query_tokens(engine: FewShotEngine, query: Query, opts: TaskOptions) -> AudioTokens:
    """A classification query as tokens: files and pcm are cut/padded to ``opts.seconds``."""
    if isinstance(query, AudioTokens):
        return query
    if isinstance(query, (str, Path)):
        return engine.clip_tokens(engine.load_clip(query, opts.seconds, opts.crop))
    return engine.clip_tokens(fix_length(query, engine.samples(opts.seconds), opts.crop))
