"""Golden input/output pairs from the torch model: the fixture every backend is checked against.

``golden/<graph>.npz`` for a step graph holds ``in.<input>`` and ``out.<output>`` stacked over S >= 16
consecutive steps ``(S, *shape)`` (so ``in.state_in.x[s+1] == out.state_out.x[s]``);
``golden/offline.npz`` holds the torch offline pass: ``audio (1, 1, N)``, ``latent (1, D, T)``,
``codes{l} (T/s_l,)``, ``zq (1, D, T)`` (summed quantised latents) and ``decoded (1, 1, N)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

MIN_STEPS = 16


def golden_audio(cfg: Any, frames: int, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal ``(frames*hop,)`` float32: gliding harmonics with a
    syllable-rate envelope plus a little noise, peak about 0.5 (exercises every conv, not just DC)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * cfg.hop) / cfg.sample_rate
    f0 = 120.0 + 60.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / cfg.sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = 0.25 * envelope * voiced + 0.02 * rng.standard_normal(t.shape)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def golden_frames(cfg: Any, chunk_frames: list[int], min_steps: int = MIN_STEPS) -> int:
    """Frames of golden audio: >= ``min_steps`` steps of the largest chunk, a whole number of groups."""
    frames = min_steps * max(chunk_frames)
    return -(-frames // cfg.group_frames) * cfg.group_frames


@torch.no_grad()
def offline_golden(model: Any, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The torch offline pass over ``audio (N,)`` (N a whole number of groups)."""
    wav = torch.from_numpy(audio)[None, None]
    latent = model.encoder(wav)
    zq, codes = model.quantizer.quantize_groups(latent)
    decoded = model.decoder(zq)
    out = {"audio": wav.numpy(), "latent": latent.numpy(), "zq": zq.numpy(), "decoded": decoded.numpy()}
    out.update({f"codes{l + 1}": c[0].numpy() for l, c in enumerate(codes)})
    return out


@torch.no_grad()
def step_golden(module: Any, graph: dict[str, Any], signal: torch.Tensor, k: int, hop: int,
                steps: int = MIN_STEPS) -> dict[str, np.ndarray]:
    """Run ``module.step`` over the first ``steps`` chunks of ``k`` frames of ``signal`` from the
    initial state and record every step's inputs and outputs under the graph's I/O names."""
    per_frame = hop if graph["kind"] == "encoder_step" else 1
    state = module.init_state(1)
    names_in = [t["name"] for t in graph["inputs"]]
    names_out = [t["name"] for t in graph["outputs"]]
    rec: dict[str, list[np.ndarray]] = {f"in.{n}": [] for n in names_in} | {f"out.{n}": [] for n in names_out}
    width = k * per_frame
    for start in range(0, min(signal.shape[-1] - width + 1, steps * width), width):
        x = signal[..., start:start + width]
        y, *new_state = module.step(x, *state)
        for n, t in zip(names_in, (x, *state)):
            rec[f"in.{n}"].append(t.numpy().copy())
        for n, t in zip(names_out, (y, *new_state)):
            rec[f"out.{n}"].append(t.numpy().copy())
        state = new_state
    return {key: np.stack(v) for key, v in rec.items()}


def write_golden(model: Any, cfg: Any, graphs: dict[str, dict], chunk_frames: list[int], out_dir: Path,
                 audio: np.ndarray | None = None) -> dict[str, str]:
    """Write ``golden/offline.npz`` and one ``golden/<graph>.npz`` per step graph; returns name -> file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if audio is None:
        audio = golden_audio(cfg, golden_frames(cfg, chunk_frames))
    offline = offline_golden(model, audio)
    np.savez(out_dir / "offline.npz", **offline)
    files = {"offline": "golden/offline.npz"}
    signals = {"encoder_step": torch.from_numpy(offline["audio"]), "decoder_step": torch.from_numpy(offline["zq"])}
    for name, graph in graphs.items():
        if not graph["kind"].endswith("_step"):
            continue
        module = model.encoder if graph["kind"] == "encoder_step" else model.decoder
        rec = step_golden(module, graph, signals[graph["kind"]], graph["chunk_frames"], cfg.hop)
        np.savez(out_dir / f"{name}.npz", **rec)
        files[name] = f"golden/{name}.npz"
    return files
