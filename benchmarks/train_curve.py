"""Training curve of a ``codec.train`` run: a PNG plot and a Markdown summary from its CSVs.

    python -m benchmarks.train_curve runs/small_main --out benchmarks/results/train_small_curve.png [--force]

Reads ``metrics.csv`` (training losses per log interval) and ``eval.csv`` (held-out reconstruction and
distinct codes per VQ layer, ``used_l1..3``). The plot has three panels: training losses (total,
reconstruction, entropy), held-out reconstruction, and codes used per layer. The Markdown (printed, and
written beside the PNG as ``.md``) tables about ``--points`` evenly spaced training rows, every eval row and the
throughput (steps/s, audio-seconds/s).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from codec.training.state import read_metrics
from runtime.cli import die

TRAIN_COLUMNS = ("total", "recon", "stft", "mel", "commitment", "entropy", "semantic", "consistency")


def _pick(rows: list[dict[str, float]], points: int) -> list[dict[str, float]]:
    """About ``points`` evenly spaced rows, always including the first and the last."""
    if len(rows) <= points:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (points - 1)) for i in range(points)})
    return [rows[i] for i in idx]


def summary(metrics: list[dict[str, float]], evals: list[dict[str, float]], points: int = 6) -> str:
    """Markdown: throughput, a training-loss table at ``points`` steps and the eval table."""
    secs = sum(r["secs"] for r in metrics)
    steps = int(metrics[-1]["step"])
    audio = sum(r["audio_s_per_s"] * r["secs"] for r in metrics)
    cols = [c for c in TRAIN_COLUMNS if c in metrics[0]]
    lines = [f"{steps} steps in {secs / 60:.1f} min of training time: {steps / secs:.3f} steps/s, "
             f"{audio / secs:.2f} audio-seconds/s (mean of per-interval rates weighted by time)", "",
             "Training losses (means over each log interval):", "",
             "| step | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    lines += [f"| {int(r['step'])} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in _pick(metrics, points)]
    lines += ["", "Held-out batch (eval.csv):", "", "| step | recon | stft | mel | used_l1 | used_l2 | used_l3 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {int(r['step'])} | {r['recon']:.3f} | {r['stft']:.3f} | {r['mel']:.3f} | {int(r['used_l1'])} | "
              f"{int(r['used_l2'])} | {int(r['used_l3'])} |" for r in evals]
    return "\n".join(lines) + "\n"


def plot(metrics: list[dict[str, float]], evals: list[dict[str, float]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    steps = [r["step"] for r in metrics]
    for key in ("total", "recon", "entropy"):
        if key in metrics[0]:
            axes[0].plot(steps, [r[key] for r in metrics], label=key)
    axes[0].set(xlabel="step", ylabel="loss", title="training (per log interval)")
    axes[0].legend()
    es = [r["step"] for r in evals]
    axes[1].plot(es, [r["recon"] for r in evals], "o-", label="recon (stft + mel)")
    axes[1].plot(es, [r["mel"] for r in evals], "s-", label="mel")
    axes[1].set(xlabel="step", ylabel="loss", title="held-out reconstruction")
    axes[1].legend()
    for k in (1, 2, 3):
        axes[2].plot(es, [r[f"used_l{k}"] for r in evals], "o-", label=f"layer {k}")
    axes[2].set(xlabel="step", ylabel="distinct codes", yscale="log", title="codes used on the held-out batch")
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_curve", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("run", type=Path, help="codec.train --out directory (metrics.csv, eval.csv)")
    ap.add_argument("--out", type=Path, required=True, help="PNG path; the Markdown goes beside it (.md)")
    ap.add_argument("--points", type=int, default=6, help="training rows in the Markdown table")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = ap.parse_args(argv)
    for name in ("metrics.csv", "eval.csv"):
        if not (args.run / name).is_file():
            die(f"{args.run / name} not found: pass a codec.train --out directory")
    md_path = args.out.with_suffix(".md")
    if not args.force and (args.out.exists() or md_path.exists()):
        die(f"{args.out} or {md_path} exists; pass --force to overwrite")
    metrics, evals = read_metrics(args.run / "metrics.csv"), read_metrics(args.run / "eval.csv")
    if not metrics or not evals:
        die(f"{args.run} has an empty metrics.csv or eval.csv (did training log anything?)")
    text = summary(metrics, evals, max(2, args.points))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(metrics, evals, f"codec.train {args.run.name}", args.out)
    md_path.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
