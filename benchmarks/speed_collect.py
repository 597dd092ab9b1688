"""Speed figures for the report, collected by calling the existing speed benchmarks' functions.

codec (``benchmarks.codec_speed``: step graphs per chunk size, offline RTF, RVQ per group) plus the
per-group end-to-end streaming latency on real speech (encode + decode of each 120 ms group, the CDF
the report plots); nearest-codeword search (``benchmarks.nearest``, CPU); the LLM
(``benchmarks.llm_speed.run``: prefill, cached-prefix query, masked generation); a paced
``runtime.stream`` run (``benchmarks.stream_latency.run_config``). GPU sections say "not run: no GPU"
where no CUDA device is visible. Every function returns (records, {section: why not run}).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

Result = tuple[list[dict[str, Any]], dict[str, str]]


def gpu_name() -> str | None:
    """The first CUDA GPU's name from nvidia-smi, None without one (no torch import)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def group_latencies(session: Any, pcm: np.ndarray) -> np.ndarray:
    """ms per 120 ms group of streaming encode + decode, fed group-sized blocks of ``pcm``."""
    enc, dec = session.new_stream(), session.new_stream()
    g = session.group_frames * session.hop
    times = []
    for i in range(0, len(pcm) - g + 1, g):
        t0 = time.perf_counter()
        codes = enc.encode(pcm[i: i + g])
        if codes:
            dec.decode(codes)
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times[2:])  # first groups build the sessions' caches


def codec_speed(codec: Path, quick: bool) -> tuple[list[dict[str, Any]], dict[str, str], np.ndarray]:
    """(records, missing, per-group latency samples ms)."""
    from benchmarks.codec_speed import offline_ort, rvq_group_ms, stream_ort
    from benchmarks.heldout import SHARED
    from runtime.audio import read_audio
    from runtime.codec import CodecSession

    session = CodecSession(codec, threads=1)
    reps = 30 if quick else 200
    tag = {"bench": "codec_speed", "provider": "cpu", "threads": 1}
    recs = [{**tag, **stream_ort(session, k, reps)} for k in session.chunk_frames]
    recs.append({**tag, **offline_ort(session, 5.0 if quick else 10.0)})
    recs[-1]["rvq_p50_ms"] = rvq_group_ms(session, reps)
    speech = np.concatenate([read_audio(p) for p in sorted((SHARED / "speech16k").glob("*.wav"))[: 2 if quick else 7]])
    lat = group_latencies(session, speech)
    recs.append({"bench": "codec_group_latency", "groups": len(lat), "p50_ms": float(np.percentile(lat, 50)),
                 "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
                 "algorithmic_ms": float(session.bundle.manifest.get("latency_ms", {}).get("algorithmic", 150.0))})
    recs_gpu, missing = codec_speed_gpu(codec, reps)
    return recs + recs_gpu, missing, lat


def codec_speed_gpu(codec: Path, reps: int) -> Result:
    """Step graphs on onnxruntime's CUDA provider where a GPU and onnxruntime-gpu exist."""
    if not gpu_name():
        return [], {"codec on GPU (CUDA / TensorRT)": "no GPU"}
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [], {"codec on GPU (CUDA)": "onnxruntime has no CUDAExecutionProvider (install the `gpu` extra)"}
    from benchmarks.codec_speed import stream_ort
    from runtime.codec import CodecSession

    session = CodecSession(codec, provider="cuda")
    return [{"bench": "codec_speed", "provider": "cuda", **stream_ort(session, k, reps)}
            for k in session.chunk_frames], {}


def nearest_speed(out: Path, quick: bool) -> Result:
    """``benchmarks.nearest`` on the CPU, and on CUDA (Triton vs torch) where a GPU exists; its own
    JSON lines, Markdown and plot land beside the report."""
    recs, missing = _nearest(out, "cpu", ["--m", "1", "14", "--backends", "numpy", "faiss"] if quick else [])
    if gpu_name():
        more, miss = _nearest(out, "cuda", ["--m", "1", "14", "1024"] if quick else [])
        recs, missing = recs + more, missing | miss
    else:
        missing["nearest-codeword search, Triton on GPU"] = "no GPU"
    return recs, missing


def _nearest(out: Path, device: str, extra: list[str]) -> Result:
    import json

    from benchmarks import nearest

    path = out / ("nearest.jsonl" if device == "cpu" else f"nearest_{device}.jsonl")
    argv = ["--device", device, "--out", str(path), "--force"] + (["--quick"] + extra if extra else [])
    try:
        rc = nearest.main(argv)
    except SystemExit as e:  # its fatal() exits
        rc = int(e.code or 1)
    if rc != 0:
        return [], {f"nearest-codeword search ({device})": f"benchmarks.nearest exited {rc}"}
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return [{"bench": "nearest", **r} for r in recs], {}


def llm_speed(model: Path, quick: bool, threads: int | None) -> Result:
    from benchmarks.llm_speed import run
    from runtime.lm import FrozenLM

    lm = FrozenLM(model, n_ctx=2048, n_threads=threads)
    sizes = (128, 16, 8, 1) if quick else (1024, 64, 64, 5)
    rows = run(lm, *sizes, warmup=1)
    return [{**r, "what": r.get("bench"), "bench": "llm_speed", "model": str(model)} for r in rows], {}


def stream_speed(codec: Path, model: Path, quick: bool, threads: int | None) -> Result:
    """One paced ``runtime.stream --task codec`` run (quick: 6 s; full: 60 s, plus denoise)."""
    from benchmarks.stream_latency import long_input, run_config

    a = argparse.Namespace(codec=codec, model=model, threads=threads)
    recs, missing = [], {}
    with tempfile.TemporaryDirectory() as d:
        wav = long_input(Path(d) / "in.wav", 6.0 if quick else 60.0)
        for task, chunk in [("codec", None)] + ([] if quick else [("denoise", 960.0)]):
            try:
                recs.append(run_config(task, chunk, wav, Path(d), a))
            except SystemExit as e:
                missing[f"runtime.stream --task {task}"] = f"failed (exit {e.code})"
    if quick:
        missing["runtime.stream --task denoise (paced)"] = "skipped in --quick (needs ~60 s of paced audio)"
    return [{"bench": "stream_latency", **r} for r in recs], missing
