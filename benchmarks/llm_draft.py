"""Task-level LLM speed on a real codec + LLM pair (``python -m benchmarks.llm_speed --tasks``).

* ``draft``: plain one-token greedy decoding vs draft-and-verify (each drafter) on real denoise
  spans: tokens/s, draft acceptance rate, verification passes, and agreement with the plain
  tokens (identical spans, first divergence, the plain step's masked top-2 margin there).
* ``labels``: batched vs sequential label scoring of a classify prompt (all default labels).
* ``start``: cold start (model load + demonstration prefix evaluated) vs cached-prefix start.
* ``denoise_rtf``: `runtime.tasks.denoise.denoise_pcm` (codec + LLM) seconds per audio second,
  one chunk after another (``none``: plain, ``auto``: draft) and ``parallel`` chunks side by side.
* ``decode_auto_parallel``: the draft spans decoded ``parallel`` at a time (`FrozenLM.generate_many`),
  agreement with plain decoding as above; its time includes the queries' prefill.
``draft`` and ``denoise_rtf`` run once with the full GGUF and once with its audio-head GGUF
(`runtime.lm_head`; rows tagged ``head``), whose masked decoding gives the same tokens.
Every decode starts from the same KV state (the cached demonstration prefix), so the plain and
draft runs are compared along reproducible evaluation paths.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.audio import read_audio
from runtime.draft import masked_argmax, span_drafter
from runtime.prompt import audio_span

DRAFTS = ("none", "auto", "aligned")


def denoise_setup(engine, files: Sequence[Path], max_chunks: int):
    """(demos, opts, [(prompt, query)], pcm list) for the default denoise demonstrations."""
    from runtime.defaults import default_demos
    from runtime.tasks import TaskOptions, load_demo_set
    from runtime.tasks.denoise import chunk_prompts, pair_demos

    demo_set = load_demo_set(default_demos("denoise"), "denoise")
    opts = TaskOptions().with_defaults("denoise", demo_set.info)
    demos = pair_demos(engine, [(r.input, r.output) for r in demo_set.select_first(None)], opts)
    pcms = [read_audio(f, engine.sample_rate) for f in files]
    spans = [x for pcm in pcms for x in chunk_prompts(engine, demos, pcm, opts)][:max_chunks]
    return demos, opts, spans, pcms


def _plain_trace(lm, prompt, n, allowed) -> tuple[list[int], list[np.ndarray]]:
    lm.truncate(prompt.prefix_len)
    seq, out, steps = list(prompt.ids), [], []
    logits = lm.logits(seq)
    for i in range(n):
        m = allowed(i)
        out.append(masked_argmax(logits, m))
        steps.append(np.where(m, logits, -np.inf))
        seq.append(out[-1])
        if i < n - 1:
            logits = lm.logits(seq)
    return out, steps


def bench_draft(engine, opts, spans, max_draft: int, parallel: int) -> list[dict]:
    lm = engine.lm
    kinds = (*DRAFTS, "auto_parallel")
    secs = {k: 0.0 for k in kinds}
    outs: dict[str, list[list[int]]] = {k: [] for k in kinds}
    counts = {k: [0, 0, 0] for k in kinds}
    traces = []
    for prompt, query in spans:
        engine.use_prefix(prompt)
        g = query.n_groups
        allowed, n = engine.span_allowed(g, opts.layout, opts.layers), engine.span_length(g, opts)
        traces.append(_plain_trace(lm, prompt, n, allowed))
        qspan = audio_span(query, opts.layout, opts.layers)
        for kind in DRAFTS:
            lm.truncate(prompt.prefix_len)
            lm.logits(prompt.ids)  # the query's prefill is not decoding
            s0 = (lm.stats.draft_proposed, lm.stats.draft_accepted, lm.stats.verify_calls)
            t0 = time.perf_counter()
            outs[kind].append(lm.generate(prompt.ids, n, allowed=allowed, drafter=span_drafter(kind, qspan),
                                          max_draft=max_draft))
            secs[kind] += time.perf_counter() - t0
            for i, (a, b) in enumerate(zip((lm.stats.draft_proposed, lm.stats.draft_accepted,
                                            lm.stats.verify_calls), s0)):
                counts[kind][i] += a - b
    _bench_parallel(engine, opts, spans, max_draft, parallel, secs, outs, counts)
    rows = [_draft_row(kind, secs, outs, counts, traces, max_draft) for kind in kinds]
    rows[-1].update(parallel=parallel, includes_query_prefill=True)
    return rows


def _bench_parallel(engine, opts, spans, max_draft, parallel, secs, outs, counts) -> None:
    """The spans with "auto" drafts, ``parallel`` at a time side by side (prefill included)."""
    lm, kind = engine.lm, "auto_parallel"
    for a in range(0, len(spans), parallel):
        group = spans[a:a + parallel]
        engine.use_prefix(group[0][0])
        g = group[0][1].n_groups
        allowed, n = engine.span_allowed(g, opts.layout, opts.layers), engine.span_length(g, opts)
        drafters = [span_drafter("auto", audio_span(q, opts.layout, opts.layers)) for _, q in group]
        s0 = (lm.stats.draft_proposed, lm.stats.draft_accepted, lm.stats.verify_calls)
        t0 = time.perf_counter()
        outs[kind] += lm.generate_many([p.ids for p, _ in group], n, allowed=allowed, drafters=drafters,
                                       max_draft=max_draft)
        secs[kind] += time.perf_counter() - t0
        for i, (x, y) in enumerate(zip((lm.stats.draft_proposed, lm.stats.draft_accepted, lm.stats.verify_calls), s0)):
            counts[kind][i] += x - y


def _draft_row(kind, secs, outs, counts, traces, max_draft) -> dict:
    tokens = sum(len(o) for o in outs[kind])
    same, firsts, margins, agree = 0, [], [], 0
    for (plain, steps), got in zip(traces, outs[kind]):
        agree += sum(a == b for a, b in zip(plain, got))
        j = next((i for i, (a, b) in enumerate(zip(plain, got)) if a != b), None)
        if j is None:
            same += 1
        else:
            firsts.append(j)
            margins.append(float(steps[j][plain[j]] - steps[j][got[j]]))
    all_margins = [float(np.partition(s[np.isfinite(s)], -2)[-1] - np.partition(s[np.isfinite(s)], -2)[-2])
                   for _, ss in traces for s in ss]
    proposed, accepted, passes = counts[kind]
    return {"bench": f"decode_{kind}", "tokens": tokens, "seconds": round(secs[kind], 3),
            "tokens_per_s": round(tokens / secs[kind], 1), "speedup_vs_plain": round(secs["none"] / secs[kind], 2),
            "max_draft": max_draft, "draft_proposed": proposed, "draft_accepted": accepted,
            "acceptance_rate": round(accepted / proposed, 3) if proposed else None, "verify_passes": passes,
            "spans": len(outs[kind]), "spans_identical_to_plain": same,
            "token_agreement_with_plain": round(agree / max(tokens, 1), 3),
            "first_divergence_positions": firsts, "plain_margin_at_divergence": [round(m, 3) for m in margins],
            "plain_top2_margin_median": round(float(np.median(all_margins)), 3),
            "plain_steps_with_margin_below_1": round(float(np.mean(np.asarray(all_margins) < 1.0)), 3)}


def bench_labels(engine, reps: int) -> list[dict]:
    """Batched vs sequential scoring of every default classify label after a cached query."""
    from runtime.defaults import default_demos
    from runtime.prompt import classification_instruction, label_candidates
    from runtime.stream_tasks import classify_demos
    from runtime.tasks import TaskOptions, load_demo_set
    from runtime.tasks.classify import query_tokens

    demo_set = load_demo_set(default_demos("classify"), "classify")
    opts = TaskOptions(shots=1).with_defaults("classify", demo_set.info)
    demos = classify_demos(engine, demo_set, opts)
    labels = sorted({str(d.output) for d in demos})
    cands = label_candidates(engine.tokenize, labels)
    query = query_tokens(engine, demo_set.rows[0].input, opts)
    prompt = engine.prompt(demos, query, opts, classification_instruction(labels), reserve=max(map(len, cands)))
    lm = engine.lm
    engine.use_prefix(prompt)
    rows, res = [], {}
    for batched in (True, False):
        times = []
        for _ in range(reps):
            lm.logits(prompt.ids)
            t0 = time.perf_counter()
            res[batched] = lm.label_logprobs(prompt.ids, cands, batched=batched)
            times.append(time.perf_counter() - t0)
        rows.append({"bench": f"labels_{'batched' if batched else 'sequential'}", "labels": len(cands),
                     "label_tokens": sum(map(len, cands)), "p50_ms": round(float(np.median(times)) * 1e3, 2)})
    rows[0]["speedup_vs_sequential"] = round(rows[1]["p50_ms"] / rows[0]["p50_ms"], 2)
    rows[0]["max_abs_diff_nat"] = round(float(np.abs(res[True] - res[False]).max()), 4)
    rows[0]["same_argmax"] = bool(np.argmax(res[True]) == np.argmax(res[False]))
    return rows


def bench_start(model: Path, n_ctx: int, threads: int | None, prefix: list[int]) -> list[dict]:
    """Model load + demonstration prefix: cold (no cache file) vs cached (verified file)."""
    from runtime.lm import FrozenLM
    from runtime.prefix_cache import PrefixCache

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("start_cold", "start_cached_prefix"):
            t0 = time.perf_counter()
            lm = FrozenLM(model, n_ctx=n_ctx, n_threads=threads)
            t1 = time.perf_counter()
            lm.prefix_cache = PrefixCache(tmp)
            lm.eval_prefix(prefix)
            t2 = time.perf_counter()
            rows.append({"bench": name, "prefix_tokens": len(prefix), "load_ms": round((t1 - t0) * 1e3, 1),
                         "prefix_ms": round((t2 - t1) * 1e3, 1), "total_ms": round((t2 - t0) * 1e3, 1),
                         "cache_hits": lm.prefix_cache.hits})
            del lm
    rows[1]["prefix_speedup"] = round(rows[0]["prefix_ms"] / rows[1]["prefix_ms"], 1)
    return rows


def bench_denoise_rtf(engine, demos, opts, pcms, max_draft: int, parallel: int) -> list[dict]:
    """Whole-file denoising (codec + LLM, demonstrations already cached): seconds per audio second,
    one chunk after another (plain, draft) and ``parallel`` chunks side by side (draft)."""
    from dataclasses import replace

    from runtime.tasks.denoise import denoise_pcm

    audio_s = sum(len(p) for p in pcms) / engine.sample_rate
    rows = []
    for kind, par in (("none", 1), ("auto", 1), ("auto", parallel)):
        o = replace(opts, draft=kind, max_draft=max_draft, parallel=par)
        lm = engine.lm
        n0, a0 = lm.stats.draft_proposed, lm.stats.draft_accepted
        t0 = time.perf_counter()
        for pcm in pcms:
            denoise_pcm(engine, demos, pcm, o)
        dt = time.perf_counter() - t0
        prop, acc = lm.stats.draft_proposed - n0, lm.stats.draft_accepted - a0
        rows.append({"bench": f"denoise_rtf_{kind}" + (f"_parallel{par}" if par > 1 else ""), "parallel": par,
                     "audio_s": round(audio_s, 2), "seconds": round(dt, 2),
                     "rtf": round(dt / audio_s, 3), "acceptance_rate": round(acc / prop, 3) if prop else None})
    return rows


def run_tasks(model: Path, codec: Path | None, files: Sequence[Path], threads: int | None, n_ctx: int,
              n_gpu_layers: int, max_chunks: int, max_draft: int, reps: int,
              heads: Sequence[str] = ("full", "audio"), parallel: int = 4) -> list[dict]:
    """Every task-level row; draft and denoise-RTF rows once per output head ("full": the GGUF,
    "audio": its audio-head GGUF, `runtime.lm_head`, when one exists), tagged ``head``."""
    from runtime.defaults import resolve
    from runtime.lm_head import head_path
    from runtime.tasks import open_engine

    model, codec, _ = resolve("denoise", model, codec, None, need_demos=False)
    rows: list[dict] = []
    for head in heads:
        if head == "audio" and not head_path(model).is_file():
            print(f"no audio head beside {model}: skipping its rows (make models / python -m runtime.lm_head)")
            continue
        engine = open_engine(model, codec, n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers,
                             audio_head=head == "audio")
        if head == "audio" and engine.lm.head_rows == engine.lm.n_vocab:
            print("the audio head could not be used (see the warning): skipping its rows")
            continue
        demos, opts, spans, pcms = denoise_setup(engine, files, max_chunks)
        part = (bench_draft(engine, opts, spans, max_draft, parallel)
                + bench_denoise_rtf(engine, demos, opts, pcms, max_draft, parallel))
        rows += [{**r, "head": head, "head_rows": engine.lm.head_rows} for r in part]
        if head == "full":
            rows += bench_labels(engine, reps)
            prefix = spans[0][0].prefix
        del engine
    rows += bench_start(model, n_ctx, threads, prefix)
    return rows
