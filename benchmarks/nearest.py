"""Benchmark: cosine nearest codeword, side by side (issue 4).

    python -m benchmarks.nearest                     # CPU-sensible default grid (see --help)
    python -m benchmarks.nearest --m 1 4 14 64 1024 --quick --force
    python -m benchmarks.nearest --device cuda --force   # full grid on a GPU

Backends: ``kernel`` (the Triton kernel, GPU only), ``torch`` (normalise + matmul + argmax, in the
config's dtype, chunked over M by 4096 rows to bound memory), ``faiss`` (``IndexFlatIP`` over the
fp32 table, GPU faiss on a GPU run when importable) and ``numpy`` (kernels/cpu.py, fp32 BLAS).
Small M is memory-bound: GB/s against the GPU's HBM peak (or, on CPU, against a measured memcpy
bandwidth). Large M is compute-bound: TFLOP/s against the datasheet peak. Writes JSON lines,
a Markdown table and a PNG plot under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import (RESULTS, check_outputs, environment, gpu_peak, markdown_table,
                               measure_memcpy_gbs, time_cpu, time_cpu_interleaved, time_gpu,
                               write_jsonl)
from kernels.cpu import NumpyNearest
from runtime.cli import run_cli
from runtime.cli import die

FULL_M = [1, 4, 14, 64, 1024, 16384, 131072]
CPU_M = [1, 4, 14, 64, 1024]
BACKENDS = ["kernel", "torch", "faiss", "numpy"]
ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}
# CPU peers above this many FLOPs per call are skipped unless --cpu-all (M=1024 x 32k x 512 = 3.4e10)
CPU_FLOP_LIMIT = 4e10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nearest", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--m", type=int, nargs="+", help=f"query counts (default: {CPU_M} on CPU, {FULL_M} on GPU)")
    p.add_argument("--n", type=int, nargs="+", default=[3000, 32000], help="codebook sizes")
    p.add_argument("--d", type=int, nargs="+", help="dims (default: 512 on CPU, 512 4096 on GPU)")
    p.add_argument("--dtype", nargs="+", choices=list(ITEMSIZE), help="(default: fp32 on CPU, fp16 fp32 on GPU)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    p.add_argument("--sequential", action="store_true",
                   help="time CPU peers one after another instead of round-robin")
    p.add_argument("--cpu-all", action="store_true", help=f"run CPU peers above {CPU_FLOP_LIMIT:.0e} FLOP/call")
    p.add_argument("--out", type=Path, default=RESULTS / "nearest.jsonl", help="JSON lines; .md and .png beside it")
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    return p.parse_args(argv)


def make_data(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((n, d), dtype=np.float32)
    cb /= np.linalg.norm(cb, axis=1, keepdims=True)
    q = rng.standard_normal((m, d), dtype=np.float32)
    return q, cb


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def build_runners(q: np.ndarray, cb: np.ndarray, dtype: str, device: str,
                  backends: list[str]) -> dict[str, tuple[str, int, Callable[[], Any]]]:
    """backend -> (device it runs on, bytes per table element it reads, zero-arg search call)."""
    runners: dict[str, tuple[str, int, Callable[[], Any]]] = {}
    if "numpy" in backends:
        searcher = NumpyNearest(cb.astype(np.float16).astype(np.float32) if dtype != "fp32" else cb)
        runners["numpy"] = ("cpu", 4, lambda: searcher.search(q))
    if "faiss" in backends:
        faiss_runner = _faiss_runner(q, cb, device)
        if faiss_runner is not None:
            runners["faiss"] = faiss_runner
    if "torch" in backends or "kernel" in backends:
        import torch

        from kernels.nearest import nearest_codeword_reference

        qt = torch.from_numpy(q).to(device).to(torch_dtype(dtype))
        ct = torch.from_numpy(cb).to(device).to(torch_dtype(dtype))
        if "torch" in backends:
            runners["torch"] = (device, ITEMSIZE[dtype],
                                lambda: nearest_codeword_reference(qt, ct, compute_dtype=ct.dtype))
        if "kernel" in backends and device == "cuda":
            from kernels.nearest import nearest_codeword_triton

            runners["kernel"] = (device, ITEMSIZE[dtype], lambda: nearest_codeword_triton(qt, ct))
    return runners


def _faiss_runner(q: np.ndarray, cb: np.ndarray, device: str) -> tuple[str, int, Callable[[], Any]] | None:
    try:
        import faiss
    except ImportError:
        print("faiss not importable: skipping the faiss peer (pip install faiss-cpu)")
        return None
    index = faiss.IndexFlatIP(cb.shape[1])
    where = "cpu"
    if device == "cuda" and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        where = "cuda"
    index.add(cb)

    def run() -> Any:
        x = q.copy()
        faiss.normalize_L2(x)  # the score is a cosine: faiss gets the normalisation too
        return index.search(x, 1)

    return where, 4, run


def result_indices(out: Any) -> np.ndarray:
    """Indices from any backend's return value (faiss returns (scores, ids) of shape (M, 1))."""
    if isinstance(out, tuple) and isinstance(out[1], np.ndarray) and out[1].ndim == 2:
        return out[1][:, 0].astype(np.int64)
    idx = out[0]
    return idx.cpu().numpy() if hasattr(idx, "cpu") else np.asarray(idx)


def measure(name: str, where: str, fn: Callable[[], Any], quick: bool) -> Any:
    if where == "cuda":
        return time_gpu(fn, rep_ms=30 if quick else 100)
    # OpenBLAS/OpenMP worker threads spin after a call; let the previous peer's threads park
    # so they do not steal the 2 cores from this one (measured: faiss 4x slower otherwise).
    time.sleep(0.3)
    return time_cpu(fn, warmup=1 if quick else 2, min_reps=3 if quick else 5,
                    budget_s=0.2 if quick else 1.0)


def time_all(runs: dict[str, tuple[str, Callable[[], Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """GPU peers one by one with do_bench; CPU peers round-robin unless --sequential."""
    cpu = {k: fn for k, (where, fn) in runs.items() if where == "cpu"}
    out = {k: measure(k, where, fn, args.quick) for k, (where, fn) in runs.items()
           if where != "cpu" or args.sequential}
    if cpu and not args.sequential:
        out.update(time_cpu_interleaved(cpu, warmup=1 if args.quick else 2, min_rounds=3 if args.quick else 5,
                                        budget_s=0.3 * len(cpu) if args.quick else 1.5 * len(cpu)))
    return out


def run_config(m: int, n: int, d: int, dtype: str, args: argparse.Namespace, device: str,
               peak: dict[str, float] | None, memcpy_gbs: float) -> list[dict[str, Any]]:
    q, cb = make_data(m, n, d)
    flops = 2.0 * m * n * d
    runners = build_runners(q, cb, dtype, device, args.backends)
    recs, ref_idx, runs = {}, None, {}
    for name, (where, elt, fn) in runners.items():
        base = {"bench": "nearest", "backend": name, "device": where, "m": m, "n": n, "d": d, "dtype": dtype}
        if where == "cpu" and flops > CPU_FLOP_LIMIT and not args.cpu_all:
            recs[name] = {**base, "skipped": f"CPU peer above {CPU_FLOP_LIMIT:.0e} FLOP (use --cpu-all)"}
            continue
        idx = result_indices(fn())
        ref_idx = idx if ref_idx is None else ref_idx
        recs[name] = {**base, "agree_vs_first": float((idx == ref_idx).mean()),
                      "bytes": n * d * elt + m * d * elt + m * 12}  # table + queries + (idx, score)
        runs[name] = (where, fn)
    for name, t in time_all(runs, args).items():
        rec = recs[name]
        rec.update(t.as_dict(), gbs=rec["bytes"] / t.p50_ms / 1e6, gflops=flops / t.p50_ms / 1e6)
        rec.update(_fractions(rec, rec["device"], dtype, peak, memcpy_gbs))
        print(f"m={m:>6} n={n:>5} d={d:>4} {dtype} {name:>6}@{rec['device']}: p50 {t.p50_ms:9.3f} ms  "
              f"p99 {t.p99_ms:9.3f} ms  {rec['gbs']:8.1f} GB/s  {rec['gflops']:9.1f} GFLOP/s", flush=True)
    out = list(recs.values())
    _speedups(out)
    return out


def _fractions(rec: dict[str, Any], where: str, dtype: str, peak: dict[str, float] | None,
               memcpy_gbs: float) -> dict[str, Any]:
    if where == "cuda" and peak is not None:
        flop_peak = peak["fp16_tflops"] if dtype in ("fp16", "bf16") else peak["fp32_tflops"]
        return {"pct_peak_bw": 100 * rec["gbs"] / peak["hbm_gbs"],
                "pct_peak_flops": 100 * rec["gflops"] / (flop_peak * 1e3)}
    if where == "cpu":
        return {"pct_memcpy_bw": 100 * rec["gbs"] / memcpy_gbs}
    return {}


def _speedups(recs: list[dict[str, Any]]) -> None:
    times = {r["backend"]: r["p50_ms"] for r in recs if "p50_ms" in r}
    for r in recs:
        if "p50_ms" not in r:
            continue
        for peer in ("torch", "faiss"):
            if peer in times and peer != r["backend"]:
                r[f"speedup_vs_{peer}"] = times[peer] / r["p50_ms"]


COLUMNS = [("m", "M", ""), ("n", "N", ""), ("d", "D", ""), ("dtype", "dtype", ""),
           ("backend", "backend", ""), ("device", "on", ""), ("p50_ms", "p50 ms", ".3f"),
           ("p99_ms", "p99 ms", ".3f"), ("gbs", "GB/s", ".1f"), ("gflops", "GFLOP/s", ".1f"),
           ("pct_peak_bw", "% HBM peak", ".1f"), ("pct_peak_flops", "% FLOP peak", ".1f"),
           ("pct_memcpy_bw", "% memcpy BW", ".1f"), ("speedup_vs_torch", "× torch", ".2f"),
           ("speedup_vs_faiss", "× faiss", ".2f")]


def write_markdown(path: Path, recs: list[dict[str, Any]], env: dict[str, Any], note: str) -> None:
    ran = [r for r in recs if "p50_ms" in r]
    head = (f"# Nearest codeword benchmark\n\n{note}\n\ncpu: {env['cpu']} ({env['cpu_cores']} cores), "
            f"load average {env['loadavg_1m']}, thread env {env['thread_env'] or 'default'}, gpu: {env['gpu']}, "
            f"git {env['git_sha']}, versions {env['versions']}, "
            f"numpy BLAS {env['numpy_blas']}\n\n")
    skipped = sorted({f"{r['backend']} m={r['m']} n={r['n']} d={r['d']}" for r in recs if "skipped" in r})
    legend = ("\n× torch / × faiss = the peer's p50 / this row's p50 (> 1: faster than the peer). "
              "GB/s counts table + queries + outputs once; a 3,000-row fp32 table (6 MB) stays in the "
              "CPU's L3, so it can exceed the memcpy figure.\n")
    tail = legend + (f"\nSkipped (CPU FLOP limit): {', '.join(skipped)}\n" if skipped else "")
    path.write_text(head + markdown_table(ran, COLUMNS) + tail)


def write_plot(path: Path, recs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in recs if "p50_ms" in r]
    panels = sorted({(r["n"], r["d"], r["dtype"]) for r in ran})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (n, d, dt) in zip(axes[0], panels):
        for backend in BACKENDS:
            pts = sorted((r["m"], r["p50_ms"]) for r in ran
                         if (r["n"], r["d"], r["dtype"], r["backend"]) == (n, d, dt, backend))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backend)
        ax.set(xscale="log", yscale="log", xlabel="M (queries)", ylabel="p50 ms", title=f"N={n} D={d} {dt}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def resolve_device(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    gpu = device == "cuda"
    if gpu:
        import torch

        if not torch.cuda.is_available():
            die("--device cuda but torch sees no CUDA device")
    ms = args.m or (FULL_M if gpu else CPU_M)
    ds = args.d or ([512, 4096] if gpu else [512])
    dtypes = args.dtype or (["fp16", "fp32"] if gpu else ["fp32"])
    outs = [args.out, args.out.with_suffix(".md"), args.out.with_suffix(".png")]
    check_outputs(outs, args.force)
    gpu_name = torch.cuda.get_device_name() if gpu else None
    peak = gpu_peak(gpu_name) if gpu_name else None
    env = environment(gpu_name)
    memcpy = measure_memcpy_gbs()
    note = (f"device {device}; CPU memcpy reference {memcpy:.1f} GB/s; GPU peak {peak}; CPU peers timed "
            f"{'one after another' if args.sequential else 'round-robin (one call each per round)'}. "
            + ("" if gpu else "CPU run: default grid M<=1024, D=512, fp32 (flags expand it); "
               "the Triton kernel needs a GPU and is not measured here."))
    print(note)
    recs = []
    for n in args.n:
        for d in ds:
            for dt in dtypes:
                for m in ms:
                    recs += [{**r, "env": env, "memcpy_gbs": memcpy, "peak": peak}
                             for r in run_config(m, n, d, dt, args, device, peak, memcpy)]
    write_jsonl(outs[0], recs)
    write_markdown(outs[1], recs, env, note)
    write_plot(outs[2], recs)
    print(f"wrote {', '.join(map(str, outs))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
