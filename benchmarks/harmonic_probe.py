"""What a harmonic decoder head does on held-out speech: branch levels, voicing and F0 accuracy (issue 9).

    python -m benchmarks.harmonic_probe --checkpoint RUN_OR_CHECKPOINT --llm models/default/llm.gguf \
        [--per-source 2] [--json-out F]

For a codec with ``decoder_head: harmonic`` (``codec.modules.harmonic``), each held-out speech file of
``benchmarks.heldout`` is encoded and decoded in torch, and per head frame (60 samples) against the input's
YIN track (``codec.pitch.yin`` at the head's hop):

- the level (RMS, dB re the input's) of the oscillator branch and of the inverse-STFT (noise) branch, on the
  input's voiced and unvoiced frames: are the harmonics used at all;
- the predicted voicing probability on voiced and unvoiced frames;
- the predicted F0 on voiced frames: median error in cents and the share within 50 cents (a quarter tone).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _db(num: float, den: float) -> float:
    return float(10 * np.log10(max(num, 1e-20) / max(den, 1e-20)))


def probe_file(model: Any, pcm: np.ndarray) -> dict[str, np.ndarray]:
    """Per head frame of one clip: noise/harmonic/input energy, voiced (YIN), predicted voicing, F0 error."""
    import torch

    from codec.pitch import yin

    hop = model.cfg.head_hop
    with torch.no_grad():
        x = model.pad_audio(torch.from_numpy(pcm.astype(np.float32))[None, None])
        zq = model.quantizer.quantize(model.encoder(x))[0]
        h = zq
        for name, module in model.decoder.named_children():
            if name == "head":
                break
            h = module(h)
        noise, harmonic, pitch = model.decoder.head.branches(h)
    frames = pitch.shape[1]
    f0, voiced = yin(x[:, 0], frames, hop, model.cfg.sample_rate)

    def energy(t: torch.Tensor) -> np.ndarray:
        return t[0, 0].double().reshape(frames, hop).pow(2).mean(-1).numpy()

    pred_f0 = 100 * torch.exp(pitch[0, :, 0].double())
    cents = 1200 * torch.log2(pred_f0 / f0[0].double().clamp_min(1.0)).abs()
    return {"noise": energy(noise), "harmonic": energy(harmonic), "input": energy(x),
            "voiced": voiced[0].numpy(), "voicing": torch.sigmoid(pitch[0, :, 1]).double().numpy(),
            "cents": cents.numpy()}


def summarise(parts: list[dict[str, np.ndarray]]) -> dict[str, float]:
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    v = cat["voiced"].astype(bool)
    out: dict[str, float] = {"frames": int(len(v)), "voiced_frames": int(v.sum())}
    for label, mask in (("voiced", v), ("unvoiced", ~v)):
        ref = float(cat["input"][mask].mean()) if mask.any() else 0.0
        out[f"harmonic_db_{label}"] = _db(float(cat["harmonic"][mask].mean()), ref) if mask.any() else float("nan")
        out[f"noise_db_{label}"] = _db(float(cat["noise"][mask].mean()), ref) if mask.any() else float("nan")
        out[f"voicing_{label}"] = float(cat["voicing"][mask].mean()) if mask.any() else float("nan")
    out["f0_median_cents"] = float(np.median(cat["cents"][v])) if v.any() else float("nan")
    out["f0_within_50_cents"] = float((cat["cents"][v] < 50).mean()) if v.any() else float("nan")
    return out


def markdown(name: str, s: dict[str, float]) -> str:
    return "\n".join([
        f"{name}: {s['frames']} head frames, {s['voiced_frames']} voiced in the input", "",
        "| frames | oscillator branch (dB re input) | noise branch (dB re input) | predicted voicing |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {s[f'harmonic_db_{k}']:.1f} | {s[f'noise_db_{k}']:.1f} | {s[f'voicing_{k}']:.2f} |"
          for k in ("voiced", "unvoiced")), "",
        f"Predicted F0 on voiced frames: median error {s['f0_median_cents']:.0f} cents, "
        f"{100 * s['f0_within_50_cents']:.1f} % within 50 cents."])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harmonic_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--llm", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="default: ../shared/data")
    ap.add_argument("--per-source", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    a = ap.parse_args(argv)
    from benchmarks.common import load_eval_checkpoint
    from benchmarks.heldout import SHARED, heldout_set
    from runtime.audio import read_audio
    from runtime.cli import die

    model = load_eval_checkpoint(a.checkpoint, a.llm)
    if model.cfg.decoder_head != "harmonic":
        die(f"{a.checkpoint} has decoder_head {model.cfg.decoder_head!r}; this probe needs a harmonic head")
    files = heldout_set(a.data or SHARED, a.per_source, 0)["speech"]
    summary = summarise([probe_file(model, read_audio(path, model.cfg.sample_rate)) for path in files])
    print(markdown(f"{a.checkpoint} on {len(files)} held-out speech files", summary))
    if a.json_out is not None:
        a.json_out.write_text(json.dumps({"checkpoint": str(a.checkpoint), "files": len(files), **summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
