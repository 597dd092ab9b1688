"""Report figures (matplotlib, Agg). Every figure carries the machine, library versions and git SHA.

rate_distortion: PESQ-wb / STOI / mel distance against kbps (log axis) per codec; denoise_bars;
classify_bars (accuracy with Wilson intervals, chance line); latency_cdf; spectrograms (input and
output of one example per task).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stamp(fig: Any, env: dict[str, Any]) -> None:
    """Footer: machine, versions, git SHA, time."""
    v = env.get("versions", {})
    text = (f"{env.get('cpu', '?')} ({env.get('cpu_cores')} cores), GPU {env.get('gpu') or 'none'} | "
            + ", ".join(f"{k} {v[k]}" for k in sorted(v)) + f" | git {str(env.get('git_sha', '?'))[:12]} | "
            f"{env.get('time_utc', '')}")
    fig.text(0.01, 0.005, text, fontsize=5.5, color="0.35", ha="left", va="bottom", wrap=True)


def _save(fig: Any, path: Path, env: dict[str, Any]) -> Path:
    stamp(fig, env)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def rate_distortion(summary: Sequence[dict[str, Any]], path: Path, env: dict[str, Any]) -> Path:
    plt = _plt()
    speech = [r for r in summary if r["kind"] == "speech"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (key, label) in zip(axes, [("pesq_wb", "PESQ-wb (higher better)"), ("stoi", "STOI (higher better)"),
                                       ("mel_distance", "mel distance (lower better)")]):
        for r in speech:
            if key in r:
                ax.errorbar(r["kbps"], r[key], yerr=r.get(key + "_se", 0), fmt="o", capsize=3, label=r["codec"])
        ax.set_xscale("log")
        ticks = sorted({round(r["kbps"], 2) for r in speech})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("kbps")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Codec quality vs bitrate, held-out speech")
    return _save(fig, path, env)


def denoise_bars(summary: Sequence[dict[str, Any]], path: Path, env: dict[str, Any]) -> Path:
    plt = _plt()
    sets = list(dict.fromkeys(r["set"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    width = 0.8 / max(1, len(methods))
    for ax, key in zip(axes, ("pesq_wb", "stoi", "si_sdr")):
        for j, m in enumerate(methods):
            vals = [next((r[key] for r in summary if r["set"] == s and r["method"] == m), np.nan) for s in sets]
            ax.bar(np.arange(len(sets)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2)
        ax.set_xticklabels([s[:32] for s in sets], fontsize=7)
        ax.set_title(key, fontsize=9)
    axes[0].legend(fontsize=6)
    fig.suptitle("Denoising: PESQ-wb, STOI, SI-SDR")
    return _save(fig, path, env)


def classify_bars(recs: Sequence[dict[str, Any]], path: Path, env: dict[str, Any]) -> Path:
    plt = _plt()
    labels = [f"{r['ways']}w{r['shots']}s {r['method'][:34]}"
              + (f" ind={'on' if r['induction'] else 'off'} r{r['repeats']} {r['layers']}" if "induction" in r else "")
              for r in recs]
    acc = np.array([r["accuracy"] for r in recs])
    err = np.array([[a - r["ci95"][0], r["ci95"][1] - a] for a, r in zip(acc, recs)]).T.reshape(2, -1)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(recs) + 1.5))
    ax.barh(np.arange(len(recs)), acc, xerr=err, capsize=2,
            color=["C0" if r["method"] == "LLM" else "C2" if r["method"].startswith("LLM") else "C1" for r in recs])
    for i, r in enumerate(recs):
        ax.plot([r["chance"]] * 2, [i - 0.4, i + 0.4], "k--", lw=0.8)
    ax.set_yticks(np.arange(len(recs)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (Wilson 95 % CI; dashed: chance)")
    ax.set_title("Few-shot ESC-50 classification: LLM vs nearest-demonstration baselines", fontsize=9)
    return _save(fig, path, env)


def latency_cdf(samples: dict[str, np.ndarray], path: Path, env: dict[str, Any]) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, x in samples.items():
        x = np.sort(np.asarray(x))
        if len(x):
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=f"{name} (n={len(x)})")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction ≤ x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Streaming codec: compute per 120 ms group (encode + search + decode)", fontsize=9)
    return _save(fig, path, env)


def _spec(ax: Any, pcm: np.ndarray, title: str) -> None:
    from scipy.signal import stft

    _, _, z = stft(np.asarray(pcm, dtype=np.float64), fs=16000, nperseg=512, noverlap=384)
    ax.imshow(20 * np.log10(np.abs(z) + 1e-6), origin="lower", aspect="auto", vmin=-100, vmax=-10,
              extent=(0, len(pcm) / 16000, 0, 8), cmap="magma")
    ax.set_title(title, fontsize=8)
    ax.set_ylabel("kHz", fontsize=7)


def spectrograms(pairs: Sequence[tuple[str, np.ndarray | None, np.ndarray]], path: Path, env: dict[str, Any]) -> Path:
    """One row per (title, input or None, output)."""
    plt = _plt()
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 2.2 * len(pairs) + 0.6), squeeze=False)
    for row, (title, x, y) in zip(axes, pairs):
        if x is None:
            row[0].axis("off")
            row[0].text(0.5, 0.5, f"{title}: text input", ha="center", va="center")
        else:
            _spec(row[0], x, f"{title}: input")
        _spec(row[1], y, f"{title}: output")
    axes[-1][0].set_xlabel("s")
    axes[-1][1].set_xlabel("s")
    return _save(fig, path, env)
