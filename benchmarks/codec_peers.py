"""A codec bundle side by side with Codec2 700C/1200/3200 and Opus 6/8 kbps on held-out audio.

    python -m benchmarks.codec_peers [--codec BUNDLE [BUNDLE ...]] [--quick] [--per-source N] [--sounds N] [--wer]
        [--out DIR] [--force]

Every codec codes the same held-out files (``benchmarks.heldout``: the ``codec/splits.py`` rule) in the
same run: the bundle through the torch-free runtime, Codec2 through Debian's ``c2enc``/``c2dec`` (8 kHz),
Opus through ``opusenc --hard-cbr``/``opusdec``. Each output is aligned to its input (energy envelope,
then waveform cross-correlation, ±100 ms) and scored: PESQ-wb, STOI, mel distance, SI-SDR on speech;
mel distance on ESC-50 sounds; with ``--wer`` the Whisper base word error rate against Whisper's own
transcript of the original. A missing peer is reported as "not run: <reason>". Writes
``codec_peers.jsonl`` (one line per file and codec, then one summary per codec) and ``codec_peers.md``
in --out.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import runtime.threads  # noqa: F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from benchmarks.heldout import SHARED, align, heldout_set, source_of

CODEC2_MODES = ("700C", "1200", "3200")
CODEC2_FRAME_MS = {"700C": 40.0, "1200": 40.0, "3200": 20.0}
OPUS_KBPS = (6, 8)
OPUS_LATENCY_MS = 26.5  # 20 ms frame + 6.5 ms look-ahead (RFC 6716)
METRICS = ("pesq_wb", "stoi", "mel_distance", "si_sdr", "wer")


@dataclass
class CodecPeer:
    """One codec: ``roundtrip(pcm (n,) float32 at 16 kHz) -> pcm (m,) float32 at 16 kHz``."""

    name: str
    kbps: float
    latency_ms: float
    roundtrip: Callable[[np.ndarray], np.ndarray]


def llm_codec_kbps(session: Any) -> float:
    """Bits/s of the code streams: per layer (frame rate / stride) x log2(codebook size)."""
    m = session.bundle.manifest["codec"]
    return sum(m["frame_rate"] / s * math.log2(n) for s, n in zip(m["vq_strides"], m["codebook_sizes"])) / 1e3


def llm_codec_peer(bundle: Path, threads: int | None = 1, name: str = "LLM-Codec") -> CodecPeer:
    from runtime.codec import CodecSession

    session = CodecSession(bundle, threads=threads)
    lat = float(session.bundle.manifest.get("latency_ms", {}).get("algorithmic", 150.0))

    def roundtrip(pcm: np.ndarray) -> np.ndarray:
        return session.decode(session.encode(pcm))[: len(pcm)]

    return CodecPeer(name, llm_codec_kbps(session), lat, roundtrip)


def _pcm16(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()


def codec2_peer(mode: str) -> CodecPeer | str:
    """Codec2 ``mode`` (8 kHz: input resampled 16k -> 8k, output 8k -> 16k), or why it cannot run."""
    if not (shutil.which("c2enc") and shutil.which("c2dec")):
        return "c2enc/c2dec not found (apt-get install -y codec2)"
    from runtime.audio import resample

    def roundtrip(pcm: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            raw, bit, dec = Path(d, "in.raw"), Path(d, "out.bit"), Path(d, "out.raw")
            raw.write_bytes(_pcm16(resample(pcm, 16000, 8000)))
            subprocess.run(["c2enc", mode, str(raw), str(bit)], check=True, capture_output=True)
            subprocess.run(["c2dec", mode, str(bit), str(dec)], check=True, capture_output=True)
            out = np.frombuffer(dec.read_bytes(), dtype="<i2").astype(np.float32) / 32768
        return resample(out, 8000, 16000)

    kbps = 0.7 if mode == "700C" else int(mode) / 1000
    return CodecPeer(f"Codec2 {mode}", kbps, CODEC2_FRAME_MS[mode], roundtrip)


def opus_peer(kbps: int) -> CodecPeer | str:
    """Opus at ``kbps`` (hard CBR, 20 ms frames, 16 kHz in and out), or why it cannot run."""
    if not (shutil.which("opusenc") and shutil.which("opusdec")):
        return "opusenc/opusdec not found (apt-get install -y opus-tools)"
    import soundfile as sf

    def roundtrip(pcm: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            wav, enc, dec = Path(d, "in.wav"), Path(d, "out.opus"), Path(d, "out.wav")
            sf.write(str(wav), np.clip(pcm, -1, 1), 16000, subtype="PCM_16")
            subprocess.run(["opusenc", "--quiet", "--hard-cbr", "--bitrate", str(kbps), "--framesize", "20",
                            str(wav), str(enc)], check=True, capture_output=True)
            subprocess.run(["opusdec", "--quiet", "--rate", "16000", str(enc), str(dec)], check=True,
                           capture_output=True)
            out, _ = sf.read(str(dec), dtype="float32", always_2d=True)
        return out.mean(axis=1)

    return CodecPeer(f"Opus {kbps} kbps", float(kbps), OPUS_LATENCY_MS, roundtrip)


def build_peers(codec: Path | Sequence[Path] | None, codec2_modes: Sequence[str] = CODEC2_MODES,
                opus_rates: Sequence[int] = OPUS_KBPS, threads: int | None = 1
                ) -> tuple[list[CodecPeer], dict[str, str]]:
    """(runnable peers, {name: why not run}); the bundles first. One bundle is named "LLM-Codec", several
    "LLM-Codec <folder name>" (to compare training runs against the same peers in one command)."""
    peers: list[CodecPeer] = []
    missing: dict[str, str] = {}
    bundles = [] if codec is None else [codec] if isinstance(codec, Path) else list(codec)
    for bundle in bundles:
        name = "LLM-Codec" if len(bundles) == 1 else f"LLM-Codec {bundle.name}"
        try:
            peers.append(llm_codec_peer(bundle, threads, name))
        except (OSError, ValueError) as e:
            missing[name] = f"bundle {bundle} cannot be opened: {e}"
    for name, made in [(f"Codec2 {m}", codec2_peer(m)) for m in codec2_modes] + \
                      [(f"Opus {k} kbps", opus_peer(k)) for k in opus_rates]:
        if isinstance(made, str):
            missing[name] = made
        else:
            peers.append(made)
    return peers, missing


def score(ref: np.ndarray, out: np.ndarray, speech: bool) -> dict[str, float]:
    """Metrics of ``out`` against ``ref`` after alignment; speech adds PESQ-wb, STOI and SI-SDR."""
    from runtime.metrics import mel_distance, speech_metrics

    r, o, lag = align(ref, out)
    row = {"lag_ms": lag / 16.0, "mel_distance": mel_distance(r, o)}
    if speech:
        row.update(speech_metrics(r, o))
    return row


def reference_text(pcm: np.ndarray, judge: Any) -> str:
    """Whisper's transcript of the original: the held-out sources ship no transcripts (the ``.txt``
    beside the LibriSpeech test-other clips is a book credit), so WER measures what the codec loses."""
    return judge.transcribe(pcm)


def evaluate(files: dict[str, list[Path]], peers: Sequence[CodecPeer], judge: Any = None,
             log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """One row per (file, codec): metrics, real-time factor, and WER when ``judge`` is given."""
    from benchmarks.asr import wer
    from runtime.audio import read_audio

    rows = []
    for kind, paths in files.items():
        for path in paths:
            pcm = read_audio(path, 16000)
            ref_text = reference_text(pcm, judge) if judge is not None and kind == "speech" else None
            for peer in peers:
                t0 = time.perf_counter()
                out = peer.roundtrip(pcm)
                rtf = (time.perf_counter() - t0) / (len(pcm) / 16000)
                row = {"file": str(path), "source": source_of(path), "kind": kind, "codec": peer.name,
                       "kbps": peer.kbps, "rtf": rtf, **score(pcm, out, kind == "speech")}
                if ref_text is not None:
                    row["hyp"], row["ref_text"] = judge.transcribe(out), ref_text
                    row["wer"] = wer(ref_text, row["hyp"])
                rows.append(row)
                log(f"{path.name} {peer.name}: " + " ".join(f"{k}={row[k]:.3f}" for k in METRICS if k in row))
    return rows


def summarise(rows: Sequence[dict[str, Any]], peers: Sequence[CodecPeer]) -> list[dict[str, Any]]:
    """Per codec and kind: mean of each metric (NaN-aware), its standard error, file count."""
    out = []
    for peer in peers:
        for kind in ("speech", "sounds"):
            sel = [r for r in rows if r["codec"] == peer.name and r["kind"] == kind]
            if not sel:
                continue
            rec: dict[str, Any] = {"summary": True, "codec": peer.name, "kind": kind, "kbps": peer.kbps,
                                   "latency_ms": peer.latency_ms, "files": len(sel),
                                   "rtf": float(np.median([r["rtf"] for r in sel]))}
            for k in METRICS:
                vals = np.array([r[k] for r in sel if k in r], dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    rec[k] = float(vals.mean())
                    rec[k + "_se"] = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0
            out.append(rec)
    return out


def markdown(summary: Sequence[dict[str, Any]], missing: dict[str, str]) -> str:
    """Two tables (speech, sounds) plus one 'not run' line per missing peer."""
    def cell(rec: dict[str, Any], k: str, spec: str) -> str:
        return "–" if k not in rec else f"{rec[k]:{spec}} ± {rec[k + '_se']:{spec}}"

    lines = ["| codec | kbps | latency ms | files | PESQ-wb | STOI | mel dist | SI-SDR dB | WER | RTF |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rec in (r for r in summary if r["kind"] == "speech"):
        lines.append(f"| {rec['codec']} | {rec['kbps']:.2f} | {rec['latency_ms']:.0f} | {rec['files']} | "
                     f"{cell(rec, 'pesq_wb', '.2f')} | {cell(rec, 'stoi', '.3f')} | {cell(rec, 'mel_distance', '.3f')}"
                     f" | {cell(rec, 'si_sdr', '.1f')} | {cell(rec, 'wer', '.2f')} | {rec['rtf']:.3f} |")
    text = "Held-out speech (mean ± standard error):\n\n" + "\n".join(lines) + "\n"
    sounds = [r for r in summary if r["kind"] == "sounds"]
    if sounds:
        text += "\nESC-50 sounds (mel distance; speech metrics do not apply):\n\n| codec | kbps | files | mel dist |\n" \
                "|---|---:|---:|---:|\n" + "".join(f"| {r['codec']} | {r['kbps']:.2f} | {r['files']} | "
                                                   f"{cell(r, 'mel_distance', '.3f')} |\n" for r in sounds)
    for name, why in missing.items():
        text += f"\n- {name}: not run: {why}"
    return text + ("\n" if missing else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.codec_peers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--codec", type=Path, nargs="+", default=None,
                   help="bundle(s) (default: models/default/codec); several are scored side by side")
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--quick", action="store_true", help="2 files per speech source, 2 sounds")
    p.add_argument("--per-source", type=int, default=20, help="files per held-out speech source")
    p.add_argument("--sounds", type=int, default=20, help="ESC-50 clips")
    p.add_argument("--wer", action="store_true", help="Whisper base word error rate (slow: ~1-3 s per clip)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/codec_peers"))
    p.add_argument("--spectrograms", type=int, default=0, metavar="N",
                   help="also plot the first N seconds of the first held-out speech file through every codec "
                        "(codec_peers_spectrograms.png in --out); 0: no plot")
    p.add_argument("--force", action="store_true")
    return p


def spectrogram_figure(files: dict[str, list[Path]], peers: Sequence[CodecPeer], seconds: int, path: Path,
                       env: dict[str, Any]) -> Path:
    """The first speech file's first ``seconds`` through every peer, each output aligned to the input."""
    from benchmarks import plots
    from runtime.audio import read_audio

    pcm = read_audio(files["speech"][0], 16000)[: 16000 * seconds]
    pairs = [(f"{p.name} ({Path(files['speech'][0]).name})", pcm, align(pcm, p.roundtrip(pcm))[1]) for p in peers]
    return plots.spectrograms(pairs, path, env)


def run(a: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[dict], list[dict], dict[str, str]]:
    """(rows, summary, missing) for parsed arguments; the report calls this too."""
    if a.codec is None:
        from runtime.defaults import default_codec

        a.codec = default_codec()
    n, s = (2, 2) if a.quick else (a.per_source, a.sounds)
    files = heldout_set(a.data, n, s)
    peers, missing = build_peers(a.codec, threads=a.threads)
    judge = None
    if a.wer:
        from benchmarks.asr import Judge, available

        reason = available()
        if reason:
            missing["Whisper WER"] = reason
        else:
            judge = Judge(threads=a.threads)
    rows = evaluate(files, peers, judge, log)
    if getattr(a, "spectrograms", 0) and files["speech"]:
        from benchmarks.common import environment

        spectrogram_figure(files, peers, a.spectrograms, a.out / "codec_peers_spectrograms.png", environment())
    return rows, summarise(rows, peers), missing


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import environment, write_jsonl
    from runtime.cli import fatal
    from runtime.defaults import DefaultsError

    a = build_parser().parse_args(argv)
    jsonl, md = a.out / "codec_peers.jsonl", a.out / "codec_peers.md"
    if not a.force and (existing := [str(p) for p in (jsonl, md) if p.exists()]):
        return fatal(f"{', '.join(existing)} exist; pass --force to overwrite")
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        rows, summary, missing = run(a, lambda s: print(s, file=sys.stderr))
    except DefaultsError as e:
        return fatal(str(e))
    env = environment(packages=["onnxruntime", "pesq", "pystoi", "faster-whisper"])
    bundles = [str(b) for b in ([a.codec] if isinstance(a.codec, Path) else a.codec)]
    write_jsonl(jsonl, rows + summary + [{"env": env, "missing": missing, "codec_bundle": bundles}])
    text = markdown(summary, missing)
    bundles = ", ".join(f"`{b}`" for b in bundles)
    md.write_text(f"# Codec peers on held-out audio\n\nbundle {bundles}, git {env['git_sha']}, {env['cpu']}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_cli

    sys.exit(run_cli(main))
