"""Shared benchmark helpers: environment record, timing, peaks, JSON lines, Markdown tables.

House style §11: warm up, then measure; report p50/p99 and a throughput unit with the device,
library versions and git SHA, one JSON line per configuration; peers measured in the same run.
Nothing here imports torch/triton at module level (CPU-only benchmarks stay light).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.manifest import git_sha  # the project's one definition (torch-free)
from runtime.cli import atomic_path, die

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Dense peak figures from NVIDIA's datasheets: HBM GB/s, fp16/bf16 tensor TFLOP/s (no sparsity),
# TF32 tensor TFLOP/s, fp32 (CUDA-core) TFLOP/s. Matched by substring of the device name, in order.
GPU_PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"hbm_gbs": 4800.0, "fp16_tflops": 989.4, "tf32_tflops": 494.7, "fp32_tflops": 66.9}),
    ("H100 NVL", {"hbm_gbs": 3900.0, "fp16_tflops": 835.0, "tf32_tflops": 417.5, "fp32_tflops": 60.0}),
    ("H100 PCIe", {"hbm_gbs": 2000.0, "fp16_tflops": 756.5, "tf32_tflops": 378.0, "fp32_tflops": 51.2}),
    ("H100", {"hbm_gbs": 3350.0, "fp16_tflops": 989.4, "tf32_tflops": 494.7, "fp32_tflops": 66.9}),
]


def gpu_peak(device_name: str) -> dict[str, float] | None:
    """Datasheet peaks for a known GPU name (``torch.cuda.get_device_name()``), else None."""
    for key, peak in GPU_PEAKS:
        if key.lower() in device_name.lower():
            return dict(peak)
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(gpu_name: str | None = None, packages: Sequence[str] = ()) -> dict[str, Any]:
    """Device, library versions and git SHA to attach to every result line."""
    pkgs = ["numpy", "torch", "triton", "faiss-cpu", "faiss-gpu", "onnxruntime", *packages]
    blas = None
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # numpy < 1.26 or a custom build: the BLAS name is informational only
        pass
    return {
        "git_sha": git_sha(), "python": platform.python_version(), "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(), "gpu": gpu_name, "numpy_blas": blas,
        "versions": {p: v for p in pkgs if (v := _version(p)) is not None},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # other jobs on a shared box skew CPU timings: record how busy it was
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS",
                                                  "MKL_NUM_THREADS") if k in os.environ},
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


@dataclass
class Timing:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    reps: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def time_cpu(fn: Callable[[], Any], warmup: int = 2, min_reps: int = 5, max_reps: int = 100,
             budget_s: float = 0.5) -> Timing:
    """Warm up, then time ``fn`` with perf_counter until ``budget_s`` or ``max_reps``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return _timing(times)


def time_cpu_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 2, min_rounds: int = 5,
                         max_rounds: int = 100, budget_s: float = 1.0) -> dict[str, Timing]:
    """Time several peers round-robin (one call each per round), so load from other jobs on a
    shared machine hits every peer alike; sequential timing let it skew ratios by 2x here."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    return {k: _timing(v) for k, v in times.items()}


def _timing(times_ms: Sequence[float]) -> Timing:
    arr = np.asarray(times_ms)
    return Timing(float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(arr.mean()), len(arr))


def time_gpu(fn: Callable[[], Any], warmup_ms: int = 25, rep_ms: int = 100) -> Timing:
    """``triton.testing.do_bench`` (CUDA events, L2 flushed between reps) p50/p99/mean."""
    from triton.testing import do_bench

    p50, p99 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.99])
    mean = do_bench(fn, warmup=0, rep=rep_ms, return_mode="mean")
    return Timing(float(p50), float(p99), float(mean), -1)


def measure_memcpy_gbs(size_mb: int = 256, reps: int = 5) -> float:
    """Best-of-``reps`` numpy copy bandwidth (read + write bytes / s, GB/s): the CPU reference
    for 'fraction of memory bandwidth' where no datasheet peak applies."""
    src = np.ones(size_mb * (1 << 20) // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def check_outputs(paths: Sequence[Path], force: bool) -> None:
    """No overwrite without --force."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        die(f"{', '.join(existing)} exist; pass --force to overwrite")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:  # Ctrl-C: no truncated results file
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")


def markdown_table(records: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec). Missing/None values print as '–'."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---:" for _ in columns) + "|"]
    for rec in records:
        cells = []
        for key, _, spec in columns:
            v = rec.get(key)
            cells.append("–" if v is None else format(v, spec) if spec else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_eval_checkpoint(checkpoint: Path, llm: Path) -> Any:
    """A codec checkpoint in eval mode on one torch thread (the probes' setting); one-line exit when it is
    missing or does not match ``llm``."""
    import torch

    from codec.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    try:
        model, _ = load_checkpoint(checkpoint, llm=llm)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    return model.eval()
