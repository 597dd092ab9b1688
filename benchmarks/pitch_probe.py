"""Where the codec loses pitch: a linear probe of F0 from its latents, and F0 kept by each codec (issue 9).

    python -m benchmarks.pitch_probe --checkpoint models/default/checkpoint --llm models/default/llm.gguf \
        [--codec BUNDLE ...] [--per-source 6] [--json-out F]

The held-out speech of ``benchmarks.codec_peers`` (``benchmarks.heldout``) is pitch-tracked with
``codec.pitch.yin`` (60-400 Hz, one 1024-sample window ending at each 30 ms latent frame). Then:

- **probe**: ridge regression from each latent frame to log F0 on the voiced frames of half the files, R² on
  the other half, for the encoder output ``z``, the quantised ``zq`` and each code layer alone. High for
  ``z`` and low for ``zq`` means the quantiser drops pitch; low for both means the encoder never kept it.
- **kept**: the same tracker on every codec's output (the checkpoint's torch round trip, each ``--codec``
  bundle, Codec2 1200 and Opus 6 kbps when installed): of the input's voiced frames, the share voiced in the
  output, and the share whose F0 is within 50 cents (a quarter tone) of the input's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

HOP = 480


def track(pcm: np.ndarray, frames: int) -> np.ndarray:
    """``codec.pitch.yin`` on one clip: F0 in Hz per latent frame, NaN where unvoiced, ``(frames,)``."""
    import torch

    from codec.pitch import yin

    f0, voiced = yin(torch.from_numpy(np.asarray(pcm, np.float64))[None], frames)
    return np.where(voiced[0].numpy(), f0[0].numpy().astype(np.float64), np.nan)


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    """Ridge regression (standardised features, intercept) fit on ``x_train (N, F)`` -> ``y_train (N,)`` or
    ``(N, K)``; its prediction for ``x_test (M, F)``, shaped like ``y_train``'s rows."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ y_train)
    return b @ w


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             lam: float = 1e-2) -> float:
    """R² on the test half of a ridge regression (standardised features, intercept) fit on the train half."""
    resid = y_test - ridge_predict(x_train, y_train, x_test, lam)
    return float(1 - np.sum(resid ** 2) / np.sum((y_test - y_test.mean()) ** 2))


def pitch_kept(ref_f0: np.ndarray, out_f0: np.ndarray) -> tuple[int, int, int]:
    """(input-voiced frames, of them voiced in the output, of them within 50 cents)."""
    voiced = ~np.isnan(ref_f0)
    both = voiced & ~np.isnan(out_f0)
    cents = 1200 * np.abs(np.log2(out_f0[both] / ref_f0[both]))
    return int(voiced.sum()), int(both.sum()), int((cents < 50).sum())


def latent_features(model: Any, pcm: np.ndarray) -> dict[str, np.ndarray]:
    """Per latent frame: ``z``, ``zq`` and each layer's held-up quantised latent, each ``(T, latent)``."""
    import torch

    with torch.no_grad():
        x = model.pad_audio(torch.from_numpy(pcm.astype(np.float32))[None, None])
        z = model.encoder(x)
        zq, _, _, per_layer = model.quantizer.quantize(z)
    feats = {"z": z, "zq": zq, **{f"layer {k + 1}": p for k, p in enumerate(per_layer)}}
    return {k: v[0].T.numpy().astype(np.float64) for k, v in feats.items()}


def probe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The probes' shared command line: checkpoint, LLM, extra bundles, data, files per source, JSON out."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--llm", type=Path, required=True)
    ap.add_argument("--codec", type=Path, nargs="*", default=[], help="bundles whose outputs are also scored")
    ap.add_argument("--data", type=Path, default=None, help="default: ../shared/data")
    ap.add_argument("--per-source", type=int, default=6)
    ap.add_argument("--json-out", type=Path, default=None)
    return ap


def probe_codecs(model: Any, checkpoint: Path, bundles: Sequence[Path]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> round trip ``pcm (N,) -> (M,)``: the checkpoint in torch, each bundle, and Codec2 1200 and
    Opus 6 kbps when installed."""
    import torch

    from benchmarks.codec_peers import codec2_peer, llm_codec_peer, opus_peer

    def torch_roundtrip(pcm: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(pcm.astype(np.float32))[None, None]).audio[0, 0].numpy()

    codecs: dict[str, Callable[[np.ndarray], np.ndarray]] = {f"checkpoint {checkpoint}": torch_roundtrip}
    for bundle in bundles:
        codecs[f"bundle {bundle}"] = llm_codec_peer(bundle, 1).roundtrip
    for name, peer in (("Codec2 1200", codec2_peer("1200")), ("Opus 6 kbps", opus_peer(6))):
        if not isinstance(peer, str):
            codecs[name] = peer.roundtrip
    return codecs


def main(argv: Sequence[str] | None = None) -> int:
    a = probe_parser("python -m benchmarks.pitch_probe", __doc__.split("\n\n")[0]).parse_args(argv)
    from benchmarks.common import load_eval_checkpoint
    from benchmarks.heldout import SHARED, align, heldout_set
    from runtime.audio import read_audio

    model = load_eval_checkpoint(a.checkpoint, a.llm)
    files = heldout_set(a.data or SHARED, a.per_source, 0)["speech"]
    codecs = probe_codecs(model, a.checkpoint, a.codec)
    per_file: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    kept = {name: np.zeros(3, int) for name in codecs}
    for path in files:
        pcm = read_audio(path, 16000)
        feats = latent_features(model, pcm)
        frames = min(len(v) for v in feats.values())
        f0 = track(pcm, frames)
        per_file.append(({k: v[:frames] for k, v in feats.items()}, f0))
        for name, roundtrip in codecs.items():
            ref, out, _ = align(pcm, roundtrip(pcm))
            n = min(len(ref), len(out)) // HOP
            kept[name] += pitch_kept(track(ref, n), track(out, n))
    half = len(per_file) // 2
    probe = {}
    for key in per_file[0][0]:
        def stack(part: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
            xs = [f[key][~np.isnan(f0)] for f, f0 in part]
            ys = [np.log(f0[~np.isnan(f0)]) for _, f0 in part]
            return np.concatenate(xs), np.concatenate(ys)
        probe[key] = ridge_r2(*stack(per_file[:half]), *stack(per_file[half:]))
    lines = [f"{len(files)} held-out speech files; probe: train on {half}, test on {len(files) - half}", "",
             "| latent | R² of log F0 (voiced frames) |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in probe.items()]
    lines += ["", "| codec | input-voiced frames | voiced in output | F0 within 50 cents |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v[0]} | {v[1] / max(v[0], 1):.1%} | {v[2] / max(v[0], 1):.1%} |" for k, v in kept.items()]
    print("\n".join(lines))
    if a.json_out is not None:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({"files": [str(f) for f in files], "probe_r2": probe,
                                          "kept": {k: v.tolist() for k, v in kept.items()}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
