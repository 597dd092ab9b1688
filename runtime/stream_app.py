"""Wiring of ``runtime.stream``: load the models, build the task's processor, open the source and
the sink, run, and close the outputs whatever happens (see ``runtime/stream.py`` for the CLI)."""
from __future__ import annotations

from typing import Any

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.stream_pipeline import Pipeline, StatusLine, run_fast, run_live
from runtime.stream_stats import StreamStats

@dataclass
class StreamResult:
    """How a stream ended: "eof", "stopped" (Ctrl-C) or "device lost"; its statistics; chunk samples."""

    stats: StreamStats
    reason: str
    chunk: int


def run_stream(a: argparse.Namespace, stop: threading.Event, caught: list) -> StreamResult:
    """Run task ``a.task`` as the parsed CLI arguments say; ``stop`` ends it gracefully."""
    check_devices(a)  # before the models load: a missing microphone should fail in a second
    loaded = load_task(a)
    for w in caught:  # e.g. onnxruntime fell back from CUDA to CPU
        print(f"warning: {w.message}", file=sys.stderr)
    stats = StreamStats(rate=loaded.rate)
    chunk_s = getattr(loaded.processor, "chunk", 0) / loaded.rate
    sink = open_sink(a, loaded.rate, chunk_s) if a.task != "classify" else None
    keep = False
    try:
        if a.task in ("tts", "text2sound"):
            reason = run_text(a, loaded.processor, sink, stats, stop)
        else:
            reason = run_audio(a, loaded.processor, sink, stats, stop)
        keep = True
    except KeyboardInterrupt:  # a second Ctrl-C: abort, but what was written stays a valid file
        keep = True
        raise
    finally:
        if sink is not None:
            sink.close(keep=keep)
            stats.underruns = getattr(sink, "underruns", 0)
            stats.output_skipped_s = getattr(sink, "trimmed_samples", 0) / getattr(sink, "rate", 1)
    return StreamResult(stats, reason, getattr(loaded.processor, "chunk", 0))


def check_devices(a: argparse.Namespace) -> None:
    """Raise AudioIOError (listing the devices) if the microphone or speaker asked for is missing."""
    from runtime.audio_io import resolve_device

    if a.task in ("denoise", "codec", "classify") and a.input == "mic":
        resolve_device(a.device, "input")
    if a.task != "classify" and a.output == "speaker":
        resolve_device(a.device, "output")


@dataclass
class LoadedTask:
    processor: object
    rate: int


def load_task(a: argparse.Namespace) -> LoadedTask:
    """The processor of ``a.task`` over freshly loaded models (codec only, or codec + LLM + demos)."""
    if a.task == "codec":
        from runtime.codec import CodecSession
        from runtime.stream_tasks import CodecProcessor

        session = CodecSession(a.codec, provider=a.provider, threads=a.threads)
        group_ms = 1000.0 * session.group_frames * session.hop / session.sample_rate
        groups = max(1, -(-int(round(a.chunk_ms or group_ms)) // int(round(group_ms))))
        return LoadedTask(CodecProcessor(session, groups), int(session.sample_rate))
    from runtime.lm_flags import draft_kwargs, engine_kwargs
    from runtime.tasks import TaskOptions, load_demo_set, open_engine

    demo_set = load_demo_set(a.demos, a.task)
    span = a.window_ms if a.task == "classify" else a.chunk_ms if a.task == "denoise" else None
    opts = TaskOptions(shots=a.shots, temperature=a.temperature, seed=a.seed,
                       clip_seconds=None if span is None else span / 1000.0, **draft_kwargs(a))
    opts = opts.with_defaults(a.task, demo_set.info)  # option errors before the models load
    engine = open_engine(a.model, a.codec, n_ctx=a.n_ctx, threads=a.threads, seed=a.seed, provider=a.provider,
                         **engine_kwargs(a))
    return LoadedTask(make_processor(a, engine, demo_set, opts), engine.sample_rate)


def make_processor(a: argparse.Namespace, engine, demo_set, opts):
    from runtime import stream_tasks as st

    if a.task == "denoise":
        return st.DenoiseProcessor(engine, st.denoise_demos(engine, demo_set, opts), opts)
    if a.task == "classify":
        window = engine.samples(opts.clip_seconds)
        hop = max(1, int(round(a.hop_ms / 1000.0 * engine.sample_rate)))
        return st.ClassifyProcessor(engine, st.classify_demos(engine, demo_set, opts), opts, window, hop,
                                    emit=label_printer(a.json), method=a.method)
    return st.TextToAudio(engine, demo_set, opts, a.task)


def label_printer(as_json: bool):
    """One line per window on stdout: ``start end label`` or a JSON object (flushed at once)."""
    def emit(w) -> None:
        if as_json:
            line = json.dumps({"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3), "label": w.label,
                               "logprobs": {k: round(v, 4) for k, v in w.logprobs.items()},
                               "latency_ms": round(w.latency_ms, 1)})
        else:
            line = f"{w.start_s:8.2f} {w.end_s:8.2f}  {w.label}"
        print(line, flush=True)

    return emit


def open_sink(a: argparse.Namespace, rate: int, chunk_s: float):
    """The speaker (queue bounded by two chunks plus a cushion) or an incrementally written file."""
    from runtime.audio_sinks import FileOutput, SpeakerOutput

    if a.output == "speaker":
        return SpeakerOutput(a.device, rate, max_queue_s=2 * chunk_s + 0.1)
    return FileOutput(Path(a.output), rate)


def run_audio(a: argparse.Namespace, processor, sink, stats: StreamStats, stop: threading.Event) -> str:
    """Audio-input tasks: microphone (live), paced file (live-like) or ``--fast`` file."""
    from runtime.audio_io import FileReader, MicInput, PacedFileInput

    from runtime.audio_sinks import FileOutput

    status = StatusLine(stats, not a.quiet)
    recorder = FileOutput(a.record_input, stats.rate) if a.record_input is not None else None
    try:
        if a.input == "mic":
            source: Any = MicInput(a.device)
        else:
            reader = FileReader(a.input)
            if a.fast:
                pipeline = Pipeline(processor, sink, stats, reader.rate, False, status, recorder)
                reason = run_fast(reader, pipeline, stop)
                stats.nonfinite_samples = reader.nonfinite
                return reason
            source = PacedFileInput(reader)
        pipeline = Pipeline(processor, sink, stats, source.rate, True, status, recorder, gather=a.gather)
        warm_up(processor, a.quiet)
        chunk_s = processor.chunk / stats.rate
        max_lag = a.max_lag_ms / 1000.0 if a.max_lag_ms else max(1.0, (a.gather + 1) * chunk_s)
        if a.input == "mic" and not a.quiet:
            print(f"listening on {source.info['name']!r} at {source.rate} Hz (Ctrl-C to stop)", file=sys.stderr)
        source.start()
        reason = run_live(source, pipeline, stop, max_lag)
        stats.nonfinite_samples = getattr(getattr(source, "reader", None), "nonfinite", 0)
        return reason
    finally:
        status.close()
        if recorder is not None:
            recorder.close(keep=True)


def warm_up(processor, quiet: bool) -> None:
    """Before a live stream starts: put the LLM task's demonstration prefix into the KV cache."""
    if not hasattr(processor, "warm_up"):
        return
    t0 = time.perf_counter()
    n = processor.warm_up()
    if not quiet:
        print(f"demonstrations in the LLM cache: {n} tokens in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def text_lines(a: argparse.Namespace):
    """``--text`` prompts, else non-empty lines of stdin as they arrive."""
    if a.text:
        yield from a.text
        return
    if sys.stdin.isatty() and not a.quiet:
        print("type one prompt per line (Ctrl-D to end)", file=sys.stderr)
    for line in sys.stdin:
        if line.strip():
            yield line


def run_text(a: argparse.Namespace, processor, sink, stats: StreamStats, stop: threading.Event) -> str:
    """tts / text2sound: each prompt's clip goes to the sink as soon as it is generated."""
    for line in text_lines(a):
        if stop.is_set():
            return "stopped"
        t0 = time.perf_counter()
        pcm = processor.speak(line, stats)
        stats.chunk_ms.append((time.perf_counter() - t0) * 1000.0)
        t_write = time.perf_counter()
        t_leave = sink.write(np.asarray(pcm, dtype=np.float32))
        stats.add("playback", t_leave - t_write)
        stats.end_to_end.append((t_leave - t0) * 1000.0)
        stats.audio_out_samples += len(pcm)
        if not a.quiet:
            print(f"{line.strip()!r}: {len(pcm) / stats.rate:.2f} s in {(t_leave - t0) * 1000:.0f} ms",
                  file=sys.stderr)
    return "stopped" if stop.is_set() else "eof"
