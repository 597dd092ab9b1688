"""Latency statistics of a stream: per-stage timings, end-to-end latency, counters, status line.

Stages (milliseconds per processed chunk): ``capture`` (a chunk's first sample waiting for the worker),
``encode`` (encoder graphs), ``search`` (nearest-codeword RVQ), ``llm_prefill`` (query tokens after
the cached demonstration prefix), ``llm_generate`` (masked decoding), ``decode`` (decoder graphs) and
``playback`` (handing audio to the sink, plus what is queued before the speaker for live output).
``end_to_end`` is measured from a chunk's first sample entering the program (the capture callback,
or the paced file clock) to its processed sample leaving (written to the file, or reaching the
speaker's DAC by PortAudio's reported output latency).
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

STAGES = ("capture", "encode", "search", "llm_prefill", "llm_generate", "decode", "playback")


def summarize(ms: list[float]) -> dict[str, float | int | None]:
    """``{"n", "p50_ms", "p95_ms", "max_ms"}`` of a list of durations in milliseconds."""
    if not ms:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    a = np.asarray(ms, dtype=np.float64)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3), "max_ms": round(float(a.max()), 3)}


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of ``pcm`` (n,) in dB full scale (-inf for silence)."""
    if pcm.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


@dataclass
class StreamStats:
    """Everything the status line, the final table and ``--stats-json`` report."""

    rate: int = 16000
    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    end_to_end: list[float] = field(default_factory=list)
    chunk_ms: list[float] = field(default_factory=list)
    audio_in_samples: int = 0
    audio_out_samples: int = 0
    llm_tokens: int = 0
    llm_generate_s: float = 0.0
    draft_proposed: int = 0  # draft tokens verified (runtime.draft), and of those accepted
    draft_accepted: int = 0
    underruns: int = 0
    overruns: int = 0
    dropped_chunks: int = 0
    nonfinite_samples: int = 0
    output_skipped_s: float = 0.0
    level_db: float = -math.inf
    started: float = field(default_factory=time.perf_counter)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage].append(seconds * 1000.0)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """``with stats.time("decode"): ...`` records the block's duration under ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rtf(self) -> float | None:
        """Processing time over audio time (< 1: faster than real time)."""
        audio = self.audio_in_samples / self.rate
        return sum(self.chunk_ms) / 1000.0 / audio if audio > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.llm_tokens / self.llm_generate_s if self.llm_generate_s > 0 else None

    def status_line(self) -> str:
        """One short line for a terminal: level, last chunk latency, LLM tokens/s, RTF, faults."""
        last = self.chunk_ms[-1] if self.chunk_ms else 0.0
        e2e = self.end_to_end[-1] if self.end_to_end else 0.0
        parts = [f"{self.audio_in_samples / self.rate:7.1f}s", f"in {self.level_db:6.1f} dBFS",
                 f"chunk {last:6.1f} ms", f"e2e {e2e:6.1f} ms"]
        if self.tokens_per_s is not None:
            parts.append(f"LLM {self.tokens_per_s:6.1f} tok/s")
        if self.rtf is not None:
            parts.append(f"RTF {self.rtf:5.2f}")
        parts.append(f"underruns {self.underruns} overruns {self.overruns} dropped {self.dropped_chunks}")
        return " | ".join(parts)

    def to_dict(self) -> dict:
        stages = {s: summarize(self.stages.get(s, [])) for s in STAGES}
        return {"rate": self.rate, "audio_in_seconds": round(self.audio_in_samples / self.rate, 3),
                "audio_out_seconds": round(self.audio_out_samples / self.rate, 3),
                "wall_seconds": round(self.wall_s, 3), "rtf": _round(self.rtf),
                "stages": stages, "chunk": summarize(self.chunk_ms),
                "end_to_end": summarize(self.end_to_end),
                "llm": {"generated_tokens": self.llm_tokens, "tokens_per_s": _round(self.tokens_per_s),
                        "draft_acceptance": _round(self.draft_accepted / self.draft_proposed)
                        if self.draft_proposed else None},
                "underruns": self.underruns, "overruns": self.overruns,
                "dropped_chunks": self.dropped_chunks, "output_skipped_s": round(self.output_skipped_s, 3),
                "nonfinite_samples": self.nonfinite_samples}

    def table(self) -> str:
        """The per-stage latency table (p50 / p95 / max in ms) plus end to end and the counters."""
        d = self.to_dict()
        rows = [f"{'stage':<14}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
        for name, s in [*d["stages"].items(), ("chunk total", d["chunk"]), ("end to end", d["end_to_end"])]:
            if s["n"]:
                rows.append(f"{name:<14}{s['n']:>7}{s['p50_ms']:>10.1f}{s['p95_ms']:>10.1f}{s['max_ms']:>10.1f}")
        rtf = f"{d['rtf']:.3f}" if d["rtf"] is not None else "-"
        tps = d["llm"]["tokens_per_s"]
        rows.append(f"audio {d['audio_in_seconds']:.2f} s in, {d['audio_out_seconds']:.2f} s out, "
                    f"wall {d['wall_seconds']:.2f} s, RTF {rtf}"
                    + (f", LLM {tps:.1f} tok/s ({d['llm']['generated_tokens']} tokens)" if tps else "")
                    + (f", drafts {d['llm']['draft_acceptance']:.0%} accepted" if d["llm"]["draft_acceptance"] else ""))
        rows.append(f"underruns {self.underruns}, overruns {self.overruns}, dropped chunks {self.dropped_chunks}"
                    + (f", speaker skipped {self.output_skipped_s:.2f} s" if self.output_skipped_s else ""))
        return "\n".join(rows)

    def write_json(self, path: Path, extra: dict | None = None) -> None:
        from runtime.cli import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({**(extra or {}), **self.to_dict()}, indent=2) + "\n")


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)
