"""Held-out quality per training minute of several ``codec.train`` runs, side by side (one plot, one table).

    python -m benchmarks.train_compare conv=runs/codec_long4 istft=runs/codec_istft+runs/codec_istft_gain \
        --out benchmarks/results/train_ab/decoder_head_cpu.png [--force]

Each argument is ``NAME=RUN`` or ``NAME=RUN+RUN+...``: a chain of warm-started runs, each continuing the one
before it, whose training minutes add up (the time axis is the chain's total). Minutes come from the runs'
``metrics.csv`` (``secs`` per log interval, the training loop's own clock: evaluation and checkpointing are
not counted); held-out figures from ``eval.csv`` (the fixed held-out batch). Writes the PNG and a Markdown
table beside it (``.md``) with every eval row of every run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from codec.training.state import read_metrics
from runtime.cli import die

Curve = list[tuple[float, int, dict[str, float]]]  # (chain minutes, step, eval row)


def chain_curve(runs: Sequence[Path]) -> Curve:
    """Eval rows of a chain of runs, each at the chain's training minutes when it was written."""
    out: Curve = []
    offset, evaluated_end = 0.0, True
    for i, run in enumerate(runs):
        metrics, evals = read_metrics(run / "metrics.csv"), read_metrics(run / "eval.csv")
        clock = [(0, 0.0)]
        for row in metrics:
            clock.append((int(row["step"]), clock[-1][1] + row["secs"] / 60))
        for row in evals:
            step = int(row["step"])
            if i and step == 0 and evaluated_end:
                continue  # the warm start's step 0 repeats the previous run's final eval
            minutes = max((m for s, m in clock if s <= step), default=0.0)
            out.append((offset + minutes, step, row))
        offset += clock[-1][1]
        evaluated_end = bool(evals) and int(evals[-1]["step"]) == clock[-1][0]  # an interrupted run has none
    return out


def parse_chain(spec: str) -> tuple[str, list[Path]]:
    name, sep, runs = spec.partition("=")
    if not sep or not name or not runs:
        raise ValueError(f"bad run {spec!r}; use NAME=RUN or NAME=RUN+RUN")
    paths = [Path(p) for p in runs.split("+")]
    for p in paths:
        if not (p / "metrics.csv").is_file() or not (p / "eval.csv").is_file():
            raise ValueError(f"{p} has no metrics.csv/eval.csv (not a codec.train --out directory)")
    return name, paths


def markdown(curves: dict[str, Curve]) -> str:
    lines = ["| run | minutes | step | held-out recon | held-out mel | held-out stft |", "|---|---:|---:|---:|---:|---:|"]
    for name, curve in curves.items():
        lines += [f"| {name} | {m:.0f} | {s} | {r['recon']:.3f} | {r['mel']:.3f} | {r['stft']:.3f} |"
                  for m, s, r in curve]
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, Curve], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        for ax, key in zip(axes, ("recon", "mel")):
            ax.plot([m for m, _, _ in curve], [r[key] for _, _, r in curve], marker="o", label=name)
    import numpy as np

    for ax, key in zip(axes, ("recon", "mel")):
        values = [r[key] for curve in curves.values() for _, _, r in curve]
        ax.set_ylim(min(values) * 0.98, float(np.median(values)) * 1.15)  # a fresh head's first eval is off-scale
        ax.set_xlabel("training minutes")
        ax.set_ylabel(f"held-out {key} loss (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN or NAME=RUN+RUN+... (a chain of warm starts)")
    ap.add_argument("--out", type=Path, required=True, help="PNG path; the Markdown goes beside it (.md)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    md = a.out.with_suffix(".md")
    if not a.force and (a.out.exists() or md.exists()):
        die(f"{a.out} or {md} exists; pass --force to overwrite")
    try:
        curves = dict(parse_chain(spec) for spec in a.runs)
    except ValueError as e:
        die(str(e))
    curves = {name: chain_curve(paths) for name, paths in curves.items()}  # type: ignore[arg-type]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, a.out)
    text = markdown(curves)
    md.write_text("# Held-out quality per training minute\n\n`python -m benchmarks.train_compare "
                  + " ".join(a.runs) + "`\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
