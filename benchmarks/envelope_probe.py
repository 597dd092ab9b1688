"""Where the codec loses the spectral envelope: a linear probe of the input's log-mel from its latents, and the
envelope each codec's output keeps (issue 9).

    python -m benchmarks.envelope_probe --checkpoint models/default/checkpoint --llm models/default/llm.gguf \
        [--codec BUNDLE ...] [--per-source 6] [--json-out F]

Targets: the log-mel of the held-out speech of ``benchmarks.codec_peers`` (``benchmarks.heldout``), 80 bands
over 0-8 kHz (``codec.losses.MelSpectrogram``, 1024-sample window, one frame per 30 ms latent frame), scored
per band group (0-1, 1-4, 4-8 kHz; STOI reads 150 Hz-4.3 kHz). Then:

- **probe**: ridge regression from each latent frame (``z``, ``zq``, each code layer alone) to the 80 bands,
  fit on half the files, R² on the other half. High for ``z`` and low for ``zq``: the quantiser drops the
  envelope; low for both: the encoder never kept it. A linear probe is a lower bound on what a decoder can read.
- **kept**: every codec's output (the checkpoint's torch round trip, each ``--codec`` bundle, Codec2 1200 and
  Opus 6 kbps when installed), aligned to its input (``benchmarks.heldout.align``), log-mel against the input's,
  R² per band with no fit: 1 is the same envelope, 0 no better than each band's mean, below 0 worse.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from benchmarks.pitch_probe import HOP, latent_features, probe_codecs, probe_parser, ridge_predict

N_FFT = 1024
N_MELS = 80
GROUPS = {"0-1 kHz": (0.0, 1000.0), "1-4 kHz": (1000.0, 4000.0), "4-8 kHz": (4000.0, 8000.0)}


def band_centres(rate: int = 16000) -> np.ndarray:
    """Centre frequency (Hz) of each of the ``N_MELS`` bands of ``log_mel``, ``(N_MELS,)``."""
    from codec.losses import mel_filterbank

    fb = mel_filterbank(N_FFT, N_MELS, rate).numpy()
    return np.linspace(0, rate / 2, N_FFT // 2 + 1)[fb.argmax(1)]


@lru_cache(maxsize=1)
def _mel() -> Any:
    from codec.losses import MelSpectrogram

    return MelSpectrogram(16000, N_FFT, HOP, N_MELS)


def log_mel(pcm: np.ndarray) -> np.ndarray:
    """``pcm (N,)`` 16 kHz -> log10 mel power ``(frames, N_MELS)``; frame t is centred on sample ``t * HOP``."""
    import torch

    with torch.no_grad():
        mel = _mel()(torch.from_numpy(np.asarray(pcm, np.float32))[None])
    return mel[0].T.numpy().astype(np.float64)


def r2_columns(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R² of ``pred`` against ``target`` per column, both ``(N, K)``: ``(K,)``."""
    ss = ((target - target.mean(0)) ** 2).sum(0)
    return 1 - ((target - pred) ** 2).sum(0) / np.maximum(ss, 1e-12)


def by_group(r2: np.ndarray, centres: np.ndarray) -> dict[str, float]:
    """Mean of per-band ``r2 (N_MELS,)`` over each band group of ``GROUPS``."""
    return {g: float(r2[(centres >= lo) & (centres < hi)].mean()) for g, (lo, hi) in GROUPS.items()}


def kept_r2(pairs: list[tuple[np.ndarray, np.ndarray]], centres: np.ndarray) -> dict[str, float]:
    """Pooled per-band R² of output log-mel against input log-mel (no fit) over ``(ref, out)`` aligned pairs."""
    ref = np.concatenate([log_mel(r) for r, _ in pairs])
    out = np.concatenate([log_mel(o) for _, o in pairs])
    return by_group(r2_columns(out, ref), centres)


def main(argv: Sequence[str] | None = None) -> int:
    a = probe_parser("python -m benchmarks.envelope_probe", __doc__.split("\n\n")[0]).parse_args(argv)
    from benchmarks.common import load_eval_checkpoint
    from benchmarks.heldout import SHARED, align, heldout_set
    from runtime.audio import read_audio

    model = load_eval_checkpoint(a.checkpoint, a.llm)
    files = heldout_set(a.data or SHARED, a.per_source, 0)["speech"]
    centres = band_centres()
    codecs = probe_codecs(model, a.checkpoint, a.codec)
    per_file: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in codecs}
    for path in files:
        pcm = read_audio(path, 16000)
        feats = latent_features(model, pcm)
        mel = log_mel(pcm)
        frames = min(len(mel), *(len(v) for v in feats.values()))
        per_file.append(({k: v[:frames] for k, v in feats.items()}, mel[:frames]))
        for name, roundtrip in codecs.items():
            ref, out, _ = align(pcm, roundtrip(pcm))
            pairs[name].append((ref, out))
    half = len(per_file) // 2
    probe: dict[str, dict[str, float]] = {}
    for key in per_file[0][0]:
        x_tr, x_te = (np.concatenate([f[key] for f, _ in part]) for part in (per_file[:half], per_file[half:]))
        y_tr, y_te = (np.concatenate([m for _, m in part]) for part in (per_file[:half], per_file[half:]))
        probe[key] = by_group(r2_columns(ridge_predict(x_tr, y_tr, x_te), y_te), centres)
    kept = {name: kept_r2(p, centres) for name, p in pairs.items()}
    groups = list(GROUPS)
    head = "| " + " | ".join(groups) + " |"
    rule = "|---|" + "---:|" * len(groups)
    lines = [f"{len(files)} held-out speech files; probe: train on {half}, test on {len(files) - half}", "",
             "| latent (linear probe: R² of the input's log-mel) " + head, rule]
    lines += [f"| {k} | " + " | ".join(f"{v[g]:.3f}" for g in groups) + " |" for k, v in probe.items()]
    lines += ["", "| codec output (R² of the input's log-mel, no fit) " + head, rule]
    lines += [f"| {k} | " + " | ".join(f"{v[g]:.3f}" for g in groups) + " |" for k, v in kept.items()]
    print("\n".join(lines))
    if a.json_out is not None:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({"files": [str(f) for f in files], "probe_r2": probe,
                                          "kept_r2": kept}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
