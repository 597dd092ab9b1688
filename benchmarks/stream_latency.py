"""``python -m benchmarks.stream_latency``: end-to-end latency, real-time factor, drift, drops and
resident memory of ``python -m runtime.stream`` over long paced (real-time) file runs.

    python -m benchmarks.stream_latency                       # codec + denoise (0.96 s, 1.92 s chunks), 10 min each
    python -m benchmarks.stream_latency --tasks codec --seconds 60 --threads 1

Each configuration streams a long input (real recordings from ../shared/data/speech16k, looped to
``--seconds``) through ``runtime.stream`` in a subprocess, paced like a microphone, and samples the
child's resident memory once a second (flat memory = no leak in the streaming path). One JSON line
per configuration (with device, versions, git SHA) and a Markdown table under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, ROOT, check_outputs, environment, markdown_table, write_jsonl
from runtime.cli import fatal, run_cli

SPEECH = ROOT.parent / "shared" / "data" / "speech16k"


def long_input(path: Path, seconds: float) -> Path:
    """Real speech recordings, concatenated and looped to ``seconds``, as a 16 kHz wav."""
    import soundfile as sf

    from runtime.audio import read_audio

    clips = [read_audio(f, 16000) for f in sorted(SPEECH.glob("*.wav"))[:20]]
    if not clips:
        raise SystemExit(fatal(f"no recordings in {SPEECH}"))
    one = np.concatenate(clips)
    n = int(seconds * 16000)
    sf.write(str(path), np.resize(one, n), 16000, subtype="PCM_16")
    return path


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_config(task: str, chunk_ms: float | None, wav: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """One paced ``runtime.stream`` run; its statistics plus the memory samples."""
    stats = work / f"{task}_{chunk_ms}.json"
    cmd = [sys.executable, "-m", "runtime.stream", "--task", task, "--input", str(wav), "--output",
           str(work / f"{task}_{chunk_ms}.wav"), "--force", "--quiet", "--stats-json", str(stats)]
    cmd += [f"--{k}={v}" for k, v in (("codec", a.codec), ("model", a.model), ("threads", a.threads),
                                       ("chunk-ms", chunk_ms)) if v is not None]
    cmd += [f"--gather={a.gather}"] if task == "denoise" else []
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    rss: list[float] = []
    while p.poll() is None:
        time.sleep(1.0)
        if (m := rss_mb(p.pid)) is not None:
            rss.append(m)
    err = p.stderr.read()
    if p.returncode != 0:
        raise SystemExit(fatal(f"runtime.stream --task {task} failed: {err.strip().splitlines()[-1:]}"))
    return {**summarize(task, chunk_ms, json.loads(stats.read_text()), rss),
            "gather": a.gather if task == "denoise" else 1}


def summarize(task: str, chunk_ms: float | None, d: dict[str, Any], rss: list[float]) -> dict[str, Any]:
    settled = rss[len(rss) // 10:] or rss  # after start-up allocations
    e2e, st = d["end_to_end"], d["stages"]
    return {"bench": "stream_latency", "task": task, "chunk_ms": round(d["chunk_samples"] / 16.0, 1),
            "asked_chunk_ms": chunk_ms, "audio_s": d["audio_in_seconds"], "wall_s": d["wall_seconds"],
            "drift_s": round(d["wall_seconds"] - d["audio_in_seconds"], 3), "rtf": d["rtf"],
            "e2e_p50_ms": e2e["p50_ms"], "e2e_p95_ms": e2e["p95_ms"], "e2e_max_ms": e2e["max_ms"],
            "chunk_p50_ms": d["chunk"]["p50_ms"], "chunk_p95_ms": d["chunk"]["p95_ms"],
            "llm_tokens_per_s": d["llm"]["tokens_per_s"], "dropped_chunks": d["dropped_chunks"],
            "draft_acceptance": d["llm"].get("draft_acceptance"),
            "underruns": d["underruns"], "overruns": d["overruns"],
            "rss_first_mb": round(settled[0], 1) if settled else None,
            "rss_last_mb": round(settled[-1], 1) if settled else None,
            "rss_max_mb": round(max(rss), 1) if rss else None,
            "stages_p50_ms": {k: v["p50_ms"] for k, v in st.items() if v["n"]}}


COLUMNS = [("task", "task", ""), ("chunk_ms", "chunk ms", ".0f"), ("gather", "gather", "d"), ("audio_s", "audio s", ".0f"),
           ("e2e_p50_ms", "e2e p50 ms", ".1f"), ("e2e_p95_ms", "e2e p95 ms", ".1f"),
           ("e2e_max_ms", "e2e max ms", ".1f"), ("rtf", "RTF", ".3f"), ("drift_s", "drift s", ".2f"),
           ("dropped_chunks", "dropped", "d"), ("llm_tokens_per_s", "LLM tok/s", ".1f"),
           ("draft_acceptance", "drafts accepted", ".2f"),
           ("rss_first_mb", "RSS first MB", ".0f"), ("rss_last_mb", "RSS last MB", ".0f")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_latency", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("codec", "denoise"), default=["codec", "denoise"])
    p.add_argument("--seconds", type=float, default=600.0, help="length of each paced run")
    p.add_argument("--denoise-chunk-ms", type=float, nargs="+", default=[960.0, 1920.0])
    p.add_argument("--codec", type=Path, default=None, help="bundle (default: models/default/codec)")
    p.add_argument("--model", type=Path, default=None, help="GGUF (default: models/default/llm.gguf)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--gather", type=int, default=1, help="denoise: whole chunks decoded together (runtime.stream)")
    p.add_argument("--name", default="stream_latency", help="results file stem under benchmarks/results/")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    out = RESULTS / f"{a.name}.jsonl"
    check_outputs([out, out.with_suffix(".md")], a.force)
    env = environment(packages=["llama-cpp-python", "sounddevice", "soxr"])
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = long_input(Path(tmp) / "input.wav", a.seconds)
        for task in a.tasks:
            for chunk in ([None] if task == "codec" else a.denoise_chunk_ms):
                rec = {**run_config(task, chunk, wav, Path(tmp), a), **env}
                print(json.dumps(rec, sort_keys=True), flush=True)
                records.append(rec)
    write_jsonl(out, records)
    out.with_suffix(".md").write_text(f"# runtime.stream paced runs ({env['cpu']}, {env['git_sha']})\n\n"
                                      + markdown_table(records, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
