"""Reconstruction quality of a codec bundle on held-out recordings (torch-free: the runtime path).

    python -m benchmarks.codec_quality --codec BUNDLE [--files F …] [--out results.jsonl]

Each file is read (any rate/channels → 16 kHz mono), coded offline through the bundle (encoder graph,
nearest-codeword search, decoder graph) and compared to its input: multi-resolution mel distance,
PESQ-wb, STOI and SI-SDR. Defaults to the shared files no training recipe in this project uses:
VoiceBank-DEMAND clean speech and the LibriSpeech utterances.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment
from runtime.audio import AudioError, read_audio
from runtime.cli import run_cli
from runtime.metrics import mel_distance, speech_metrics
from runtime.cli import die

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIN_SECONDS = 0.25  # PESQ needs 1/4 s; the 2048-point mel resolution needs 0.128 s


def default_files() -> list[Path]:
    files = sorted((SHARED / "voicebank_demand" / "clean").glob("*.wav"))
    files += sorted((SHARED / "librispeech").glob("*.ogg"))
    return files


def evaluate_file(session, path: Path) -> dict:
    """Round-trip one file through ``session`` and score it against the input."""
    pcm = read_audio(path, session.sample_rate)
    if len(pcm) < MIN_SECONDS * session.sample_rate:
        raise AudioError(f"{path} is {len(pcm) / session.sample_rate:.3f} s long; the quality metrics need "
                         f">= {MIN_SECONDS} s")
    t0 = time.perf_counter()
    out = session.decode(session.encode(pcm))[: len(pcm)]
    secs = time.perf_counter() - t0
    row = {"file": path.name, "seconds": len(pcm) / session.sample_rate, "rtf": secs / (len(pcm) / session.sample_rate),
           "mel_distance": mel_distance(pcm, out, session.sample_rate)}
    row.update(speech_metrics(pcm, out, session.sample_rate))
    return row


def summarise(rows: list[dict]) -> dict:
    keys = ("mel_distance", "pesq_wb", "stoi", "si_sdr", "rtf")
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys} | {"files": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--codec", required=True, help="bundle directory written by python -m export.onnx")
    ap.add_argument("--files", nargs="*", type=Path, help="audio files (default: held-out shared speech)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, help="append JSON lines here")
    args = ap.parse_args(argv)
    from runtime.bundle import BundleError
    from runtime.codec import CodecSession

    files = args.files or default_files()
    if not files:
        die("no audio files given and none found in ../shared/data")
    try:
        session = CodecSession(args.codec, threads=args.threads)
    except (BundleError, OSError, ValueError) as e:
        die(str(e))
    rows = []
    for path in files:
        try:
            rows.append(evaluate_file(session, path))
        except AudioError as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        r = rows[-1]
        print(f"{r['file']}: mel {r['mel_distance']:.3f} pesq {r['pesq_wb']:.2f} stoi {r['stoi']:.3f} "
              f"si-sdr {r['si_sdr']:.1f} dB", file=sys.stderr)
    if not rows:
        die("no file could be read")
    summary = summarise(rows) | {"codec": str(args.codec), "env": environment()}
    print("| files | mel distance | PESQ-wb | STOI | SI-SDR (dB) | RTF |\n|---|---|---|---|---|---|")
    print(f"| {summary['files']} | {summary['mel_distance']:.3f} | {summary['pesq_wb']:.2f} | {summary['stoi']:.3f} "
          f"| {summary['si_sdr']:.1f} | {summary['rtf']:.3f} |")
    if args.out:
        with args.out.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.write(json.dumps({"summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
