"""Codec speed: per-chunk streaming latency and offline real-time factor, onnxruntime CPU vs torch eager.

    python -m benchmarks.codec_speed --codec BUNDLE [--checkpoint CKPT] [--threads 1 2]

Per chunk size k of the bundle: one encoder step + one decoder step with carried state (what a
full-duplex stream pays per k·30 ms of audio), p50/p99 over ``--reps`` calls after warm-up, the
p99 per 30 ms frame, and RTF = p50 / (k·30 ms); the numpy RVQ of one group is timed separately.
Offline: ``session.encode`` + ``session.decode`` (graphs + RVQ) of ``--offline-seconds`` of audio,
RTF = time / duration. torch eager is measured on the same configurations when torch is installed
and ``--checkpoint`` is given. One JSON line per configuration, then a Markdown table.

Random benchmark models: ``python -m benchmarks.make_random_codec --preset small --out CKPT`` and
``python -m export.onnx CKPT --out BUNDLE``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import check_outputs, environment, markdown_table, time_cpu, write_jsonl
from runtime.cli import run_cli
from runtime.cli import die

COLUMNS = [("backend", "backend", ""), ("threads", "threads", ""), ("mode", "mode", ""),
           ("enc_p50_ms", "enc p50 ms", ".2f"), ("dec_p50_ms", "dec p50 ms", ".2f"),
           ("p50_ms", "enc+dec p50 ms", ".2f"), ("p99_ms", "enc+dec p99 ms", ".2f"),
           ("p99_per_frame_ms", "p99 / 30 ms frame", ".2f"), ("rvq_p50_ms", "RVQ/group p50 ms", ".3f"),
           ("rtf", "RTF", ".4f")]


def stream_ort(session: Any, k: int, reps: int) -> dict[str, Any]:
    """Encoder step + decoder step on ``k`` frames with carried state, through the runtime session."""
    rng = np.random.default_rng(k)
    audio = (0.1 * rng.standard_normal((1, 1, k * session.hop))).astype(np.float32)
    latent = rng.standard_normal((1, session.bundle.latent_dim, k)).astype(np.float32)
    st = {"enc": session.initial_state("encoder"), "dec": session.initial_state("decoder")}

    def enc() -> None:
        st["enc"] = session.run_step("encoder", k, audio, st["enc"])[1]

    def dec() -> None:
        st["dec"] = session.run_step("decoder", k, latent, st["dec"])[1]

    return _stream_record(enc, dec, k, session.hop, session.sample_rate, reps)


def stream_torch(model: Any, k: int, reps: int) -> dict[str, Any]:
    import torch

    cfg = model.cfg
    g = torch.Generator().manual_seed(k)
    audio = 0.1 * torch.randn(1, 1, k * cfg.hop, generator=g)
    latent = torch.randn(1, cfg.latent_dim, k, generator=g)
    st = {"enc": model.encoder.init_state(1), "dec": model.decoder.init_state(1)}

    @torch.inference_mode()
    def enc() -> None:
        st["enc"] = model.encoder.step(audio, *st["enc"])[1:]

    @torch.inference_mode()
    def dec() -> None:
        st["dec"] = model.decoder.step(latent, *st["dec"])[1:]

    return _stream_record(enc, dec, k, cfg.hop, cfg.sample_rate, reps)


def _stream_record(enc: Callable[[], None], dec: Callable[[], None], k: int, hop: int, rate: int,
                   reps: int) -> dict[str, Any]:
    def both() -> None:
        enc()
        dec()

    t_enc = time_cpu(enc, warmup=5, min_reps=reps, max_reps=reps)
    t_dec = time_cpu(dec, warmup=5, min_reps=reps, max_reps=reps)
    t = time_cpu(both, warmup=5, min_reps=reps, max_reps=reps)
    chunk_ms = 1000.0 * k * hop / rate
    return {"mode": f"stream c{k}", "chunk_frames": k, "enc_p50_ms": t_enc.p50_ms, "dec_p50_ms": t_dec.p50_ms,
            "p50_ms": t.p50_ms, "p99_ms": t.p99_ms, "mean_ms": t.mean_ms, "reps": t.reps,
            "p99_per_frame_ms": t.p99_ms / k, "rtf": t.p50_ms / chunk_ms}


def rvq_group_ms(session: Any, reps: int) -> float:
    """p50 of one group's RVQ exactly as the stream runs it (BLAS limited to one thread)."""
    from runtime.rvq import blas_single_thread, make_rvq

    rvq = make_rvq(session.tables, session.strides)
    latent = np.random.default_rng(0).standard_normal((session.group_frames, session.bundle.latent_dim))
    latent = latent.astype(np.float32)

    def one() -> None:
        with blas_single_thread():
            rvq(latent)

    return time_cpu(one, warmup=3, min_reps=reps, max_reps=reps).p50_ms


def offline_ort(session: Any, seconds: float) -> dict[str, Any]:
    pcm = (0.1 * np.random.default_rng(1).standard_normal(int(seconds * session.sample_rate))).astype(np.float32)
    state: dict[str, Any] = {}

    def enc() -> None:
        state["codes"] = session.encode(pcm)

    enc()
    t_enc = time_cpu(enc, warmup=1, min_reps=3, max_reps=5, budget_s=0.0)
    t_dec = time_cpu(lambda: session.decode(state["codes"]), warmup=1, min_reps=3, max_reps=5, budget_s=0.0)
    return _offline_record(t_enc.p50_ms, t_dec.p50_ms, seconds)


def offline_torch(model: Any, seconds: float) -> dict[str, Any]:
    import torch

    wav = 0.1 * torch.randn(1, 1, int(seconds * model.cfg.sample_rate), generator=torch.Generator().manual_seed(1))
    codes = model.encode(wav)
    t_enc = time_cpu(lambda: model.encode(wav), warmup=1, min_reps=3, max_reps=5, budget_s=0.0)
    t_dec = time_cpu(lambda: model.decode(codes), warmup=1, min_reps=3, max_reps=5, budget_s=0.0)
    return _offline_record(t_enc.p50_ms, t_dec.p50_ms, seconds)


def _offline_record(enc_ms: float, dec_ms: float, seconds: float) -> dict[str, Any]:
    total = enc_ms + dec_ms
    return {"mode": f"offline {seconds:g} s", "chunk_frames": None, "enc_p50_ms": enc_ms, "dec_p50_ms": dec_ms,
            "p50_ms": total, "p99_ms": None, "p99_per_frame_ms": None, "rtf": total / (1000.0 * seconds)}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from runtime.codec import CodecSession

    records = []
    for threads in args.threads:
        session = CodecSession(args.codec, provider="cpu", threads=threads)
        base = {"bench": "codec_speed", "backend": "onnxruntime-cpu", "threads": threads,
                "preset": session.bundle.manifest["codec"]["preset"]}
        rvq_ms = rvq_group_ms(session, args.reps)
        for k in session.chunk_frames:
            records.append(base | stream_ort(session, k, args.reps) | {"rvq_p50_ms": rvq_ms})
            _emit(records[-1])
        records.append(base | offline_ort(session, args.offline_seconds))
        _emit(records[-1])
        if args.model is not None:
            import torch

            torch.set_num_threads(threads)
            tb = base | {"backend": "torch-eager"}
            for k in session.chunk_frames:
                records.append(tb | stream_torch(args.model, k, args.reps))
                _emit(records[-1])
            records.append(tb | offline_torch(args.model, args.offline_seconds))
            _emit(records[-1])
    return records


def _emit(rec: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in rec.items() if k != "env"}, sort_keys=True), flush=True)


def load_torch_model(checkpoint: Path | None) -> Any:
    if checkpoint is None:
        return None
    try:
        from codec.checkpoint import load_checkpoint
    except ImportError as e:
        print(f"warning: torch eager skipped ({e})", file=sys.stderr)
        return None
    model, _ = load_checkpoint(checkpoint)
    model.fold_weight_norm()  # what export traces; weight norm would add a per-call renormalisation
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.codec_speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--codec", type=Path, required=True, help="bundle directory")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint of the bundle, for torch eager")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime/torch intra-op threads")
    p.add_argument("--reps", type=int, default=200, help="timed calls per streaming configuration")
    p.add_argument("--offline-seconds", type=float, default=10.0, help="audio length of the offline runs")
    p.add_argument("--out", type=Path, default=None, help="also write JSON lines here (and a .md beside it)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    args = p.parse_args(argv)
    if args.out is not None:
        check_outputs([args.out, args.out.with_suffix(".md")], args.force)
    from runtime.bundle import BundleError

    try:
        args.model = load_torch_model(args.checkpoint)
        records = run(args)
    except (BundleError, FileNotFoundError, ValueError) as e:
        die(str(e))
    env = environment()
    table = markdown_table(records, COLUMNS)
    print(f"\n{table}\n{env['cpu']} ({env['cpu_cores']} cores, load {env['loadavg_1m']:.1f}), "
          f"onnxruntime {env['versions'].get('onnxruntime')}, torch {env['versions'].get('torch')}, {env['git_sha']}")
    if args.out is not None:
        write_jsonl(args.out, [r | {"env": env} for r in records])
        args.out.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
