"""Short A/B training runs of the codec recipe: same seed, same data, same wall-clock budget, one table.

    python -m benchmarks.train_ab --llm LLM.gguf --data LISTS... --eval-data LISTS... \
        --minutes 4 --parallel 7 --device cuda --out runs/ab [--variants base disc2 ...]

Each variant is ``codec.train`` with the common recipe (``small`` preset, balanced sources, constant LR
after a 50-step warm-up, ``--time-limit``) plus its own flags (``VARIANTS``). Runs go ``--parallel`` at a
time (one GPU holds many small runs; on a CPU use 1). Afterwards every checkpoint is scored on the same
held-out batch (``--eval-clips`` segments of ``--eval-seconds`` from ``--eval-data``, never trained on):
multi-resolution STFT + mel reconstruction loss (lower is better) and distinct codes per layer. Writes
``ab.jsonl`` and ``ab.md`` (variants sorted by held-out loss) in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import runtime.threads  # noqa: F401  (the one thread environment)
from benchmarks.common import environment, markdown_table

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "disc-every-2": ["--disc-every", "2"],
    "no-adversarial": ["--no-adversarial"],
    "lr-3e-4": ["--lr", "3e-4"],
    "segment-2s": ["--segment-seconds", "2", "--batch-size", "4"],
    "decoder-512": ["--override", "decoder_dim=512"],
    "mel-x2": ["--loss-weight", "mel=2"],
    "adv-start-500": ["--adv-start", "500"],
    "bf16": ["--bf16"],
    "istft-head": ["--override", "decoder_head=istft"],
    "mpd": ["--disc", "mpd"],
    "msstft+mpd": ["--disc", "both"],
}
COLUMNS = [("variant", "variant", ""), ("steps", "steps", ""), ("audio_s_per_s", "audio s/s", ".1f"),
           ("heldout_recon", "held-out recon", ".3f"), ("heldout_mel", "held-out mel", ".3f"),
           ("heldout_stft", "held-out stft", ".3f"), ("used_l1", "codes l1", ""), ("used_l2", "codes l2", ""),
           ("used_l3", "codes l3", ""), ("flags", "flags", "")]


def train_cmd(args: argparse.Namespace, name: str) -> list[str]:
    return [sys.executable, "-m", "codec.train", "--preset", "small", "--llm", str(args.llm),
            "--data", *map(str, args.data), "--eval-data", *map(str, args.eval_data), "--balanced",
            "--out", str(args.out / name), "--steps", "1000000", "--time-limit", str(args.minutes),
            "--schedule", "constant", "--lr", "1e-3", "--warmup", "50", "--seed", "0", "--device", args.device,
            "--threads", str(args.threads), "--log-every", "50", "--ckpt-every", "1000000", "--no-progress",
            "--word-list", args.word_list, "--force", *(["--init", str(args.init)] if args.init else []),
            *VARIANTS[name]]


def run_all(args: argparse.Namespace) -> dict[str, int]:
    """Start the variants ``--parallel`` at a time; returns each one's exit status."""
    pending, running, status = list(args.variants), {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(args.out / f"{name}.log", "w")
            running[name] = (subprocess.Popen(train_cmd(args, name), stdout=log, stderr=subprocess.STDOUT), log)
            print(f"started {name}", flush=True)
        time.sleep(2)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                status[name] = proc.returncode
                del running[name]
                print(f"{name}: exit {proc.returncode}", flush=True)
    return status


def heldout_scores(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, float]]:
    """Reconstruction losses and code usage of every checkpoint on one fixed held-out batch."""
    import torch

    from codec.checkpoint import load_checkpoint
    from codec.config import CodecConfig
    from codec.train import fixed_batch, segment_samples
    from codec.training.objective import GeneratorObjective, LossWeights

    device = torch.device("cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu")
    out: dict[str, dict[str, float]] = {}
    for name in names:
        model, _ = load_checkpoint(args.out / name)
        cfg: CodecConfig = model.cfg
        wav = fixed_batch(args.eval_data, segment_samples(cfg, args.eval_seconds), args.eval_clips, seed=1).to(device)
        model = model.to(device).eval()
        objective = GeneratorObjective(cfg.latent_dim, cfg.sample_rate, LossWeights(), None, None).to(device)
        with torch.no_grad():
            rec, used = [], [set(), set(), set()]
            for i in range(0, len(wav), 8):
                o = model(wav[i:i + 8])
                rec.append({k: float(v) for k, v in objective.reconstruction(o.audio, wav[i:i + 8]).items()})
                for k, c in enumerate(o.codes):
                    used[k] |= set(torch.unique(c).tolist())
        mel = sum(r["mel"] for r in rec) / len(rec)
        stft = sum(r["stft"] for r in rec) / len(rec)
        out[name] = {"heldout_mel": mel, "heldout_stft": stft, "heldout_recon": mel + stft,
                     **{f"used_l{k + 1}": len(u) for k, u in enumerate(used)}}
    return out


def train_facts(run: Path) -> dict[str, Any]:
    from codec.training.state import read_metrics

    rows = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
    if not rows:
        return {"steps": 0, "audio_s_per_s": float("nan")}
    return {"steps": int(rows[-1]["step"]), "audio_s_per_s": sum(r["audio_s_per_s"] for r in rows) / len(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--llm", type=Path, required=True, help="GGUF whose embedding table gives the codebooks")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="training folders/files/lists")
    p.add_argument("--eval-data", type=Path, nargs="+", required=True, help="held-out folders/files/lists")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget per run")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--word-list", default="default", help="codec.train --word-list")
    p.add_argument("--init", type=Path, default=None,
                   help="every variant warm-starts from this checkpoint (codec.train --init), e.g. the default codec")
    p.add_argument("--eval-clips", type=int, default=48)
    p.add_argument("--eval-seconds", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=Path("runs/train_ab"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    status = run_all(args)
    done = [n for n in args.variants if status.get(n) in (0, 130) and (args.out / n / "model.safetensors").is_file()]
    scores = heldout_scores(args, done)
    env = environment(packages=["torch"])
    rows = []
    for name in args.variants:
        row = {"variant": name, "flags": " ".join(VARIANTS[name]) or "(common recipe)", "exit": status.get(name),
               **train_facts(args.out / name), **scores.get(name, {})}
        rows.append(row)
    rows.sort(key=lambda r: r.get("heldout_recon", float("inf")))
    with open(args.out / "ab.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "minutes": args.minutes, "device": args.device, "env": env}) + "\n")
    head = (f"# Codec recipe A/B: {args.minutes:g} min each on {args.device} ({args.parallel} at a time), seed 0, "
            f"`{args.llm.name}` codebooks; held-out: {args.eval_clips} × {args.eval_seconds:g} s from "
            f"{', '.join(p.name for p in args.eval_data)}\n\n")
    (args.out / "ab.md").write_text(head + markdown_table(rows, COLUMNS) + "\n")
    print((args.out / "ab.md").read_text())
    return 0 if all(status.get(n) in (0, 130) for n in args.variants) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
