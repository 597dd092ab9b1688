"""The one prepared GPU check (``make gpu-check``): every GPU test plus a reduced GPU benchmark grid.

    LLMCODEC_AUTOTUNE=quick python3 -m benchmarks.gpu_check --out runs/gpu-check

Made for a short, cold lease (one H100/H200, empty Triton cache, no internet, the machine's own
python3 with torch/triton; onnxruntime there may be CPU-only): each part is timed, anything missing
is skipped with its reason, and one ``gpu_check.md`` + ``gpu_check.json`` summary is written.

Parts:
1. tests: pytest over the ``gpu``/``triton``/``tensorrt`` tests (Triton kernels at full size with
   near-tie cases, CUDA-graph RVQ, TensorRT), junit XML parsed into passed/failed/skipped + reasons;
2. nearest codeword: Triton vs torch (normalise + matmul + argmax), GB/s at M <= 16 (GEMV,
   memory-bound) and TFLOP/s at M >= 16k (GEMM), 32k-row tables at D = 640 (Gemma) and 4096 (LLaMA-2);
3. codec streaming per 120 ms group on a random ``small`` codec exported here: encoder step +
   codeword search + decoder step, CPU (onnxruntime + numpy search) against CUDA (torch eager steps
   + the Triton CUDA-graph search; onnxruntime's CUDA provider when onnxruntime-gpu is installed);
4. llama.cpp offload: generation speed with ``n_gpu_layers=-1`` vs CPU when llama-cpp-python was
   built with CUDA.
Exit status 1 when a test failed, else 0 (skips are reported, never counted as passes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("LLMCODEC_AUTOTUNE", "quick")  # before kernels.nearest is imported

import runtime.threads  # noqa: E402,F401  (the one thread environment)
from benchmarks.common import ROOT, environment, markdown_table, time_cpu  # noqa: E402

TEST_FILES = ["tests/test_kernels_triton.py", "tests/test_tensorrt.py"]
GROUP_FRAMES = 4


def run_part(name: str, fn: Callable[[], dict[str, Any]], results: dict[str, Any]) -> None:
    """Run one part, recording its outcome, wall time and any error (a failing part never stops the rest)."""
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001  (the check reports every part, whatever broke)
        out = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    results[name] = out
    print(f"   {name}: {out.get('status')} in {out['seconds']} s {out.get('error') or out.get('reason') or ''}",
          flush=True)


def gpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            facts.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    except ImportError:
        facts["torch"] = None
    for mod in ("triton", "onnxruntime", "tensorrt", "llama_cpp"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            facts[mod] = f"missing ({type(e).__name__})"
    try:
        import onnxruntime as ort

        facts["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return facts


def run_tests(out: Path, timeout: int) -> dict[str, Any]:
    xml = out / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "gpu or triton or tensorrt",
           f"--junitxml={xml}", *TEST_FILES]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    if not xml.is_file():
        return {"status": "error", "error": f"pytest wrote no report (exit {proc.returncode}): "
                                            f"{(proc.stdout + proc.stderr)[-800:]}"}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures, skips = [], {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{Path(case.get('file') or case.get('classname', '')).name}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            failures.append({"test": name, "message": (node.get("message") or "")[:300]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = (case.find("skipped").get("message") or "").strip()
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    status = "failed" if counts["failed"] or proc.returncode not in (0, 5) else "ok"
    return {"status": status, **counts, "failures": failures, "skip_reasons": skips, "exit": proc.returncode}


def run_nearest(out: Path, timeout: int) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "torch sees no CUDA device"}
    jsonl = out / "nearest.jsonl"
    cmd = [sys.executable, "-m", "benchmarks.nearest", "--device", "cuda", "--m", "1", "4", "16", "16384", "65536",
           "--n", "32000", "--d", "640", "4096", "--dtype", "fp16", "fp32", "--backends", "kernel", "torch",
           "--quick", "--out", str(jsonl), "--force"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    (out / "nearest.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not jsonl.is_file():
        return {"status": "error", "error": f"benchmarks.nearest exit {proc.returncode}: {proc.stderr[-800:]}"}
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return {"status": "ok", "rows": [{k: v for k, v in r.items() if k != "env"} for r in rows]}


def build_checkpoint(work: Path) -> Path:
    """A random-weight ``small`` codec at real table sizes (speed does not depend on the weights)."""
    from benchmarks import make_random_codec

    if make_random_codec.main(["--preset", "small", "--out", str(work / "ckpt"), "--force"]) != 0:
        raise RuntimeError("make_random_codec failed")
    return work / "ckpt"


class _Tables:
    """What the search paths need from a session when no bundle could be exported: tables + strides."""

    def __init__(self, model: Any) -> None:
        self.tables = [(r.numpy(), n.numpy()) for r, n in model.quantizer.projected_tables()]
        self.strides = tuple(model.cfg.vq_strides)
        self.hop, self.sample_rate = model.cfg.hop, model.cfg.sample_rate
        self.latent_dim = model.cfg.latent_dim

    def new_searcher(self) -> Any:
        from runtime.rvq import make_rvq

        return make_rvq(self.tables, self.strides)


def run_codec_stream(work: Path, reps: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from codec.checkpoint import load_checkpoint

    ckpt = build_checkpoint(work)
    model, _ = load_checkpoint(ckpt)
    model.fold_weight_norm()
    tables = _Tables(model)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, 1, GROUP_FRAMES * tables.hop))).astype(np.float32)
    latent_np = rng.standard_normal((GROUP_FRAMES, tables.latent_dim)).astype(np.float32)
    group_ms = 1000.0 * GROUP_FRAMES * tables.hop / tables.sample_rate
    rows: list[dict[str, Any]] = []
    try:
        from export.onnx import export_bundle
        from runtime.codec import CodecSession

        export_bundle(ckpt, work / "bundle", log=lambda line: None)
        cpu = CodecSession(work / "bundle", provider="cpu", threads=1)
        rows.append(_ort_row("onnxruntime CPU, 1 thread + numpy search", cpu, audio, latent_np, reps, group_ms))
        import onnxruntime as ort

        if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
            gpu = CodecSession(work / "bundle", provider="cuda", search="triton")
            rows.append(_ort_row("onnxruntime CUDA (I/O bound) + Triton search", gpu, audio, latent_np, reps,
                                 group_ms))
        else:
            rows.append({"path": "onnxruntime CUDA + Triton search", "status": "skipped",
                         "reason": f"onnxruntime here has {ort.get_available_providers()} (no onnxruntime-gpu)"})
    except Exception as e:  # noqa: BLE001  (the torch rows below still run)
        rows.append({"path": "onnxruntime bundle", "status": "skipped", "reason": f"export failed: {e}"[:300]})
    for dev in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        rows.append(_torch_row(model, dev, tables, audio, latent_np, reps, group_ms))
    status = "ok" if torch.cuda.is_available() else "skipped"
    return {"status": status, "rows": rows, **({} if status == "ok" else {"reason": "torch sees no CUDA device"})}


def _ort_row(label: str, session: Any, audio: Any, latent: Any, reps: int, group_ms: float) -> dict[str, Any]:
    stream = session.new_stream()
    search = session.new_searcher()
    st = {"enc": session.initial_state("encoder"), "dec": session.initial_state("decoder")}

    def enc() -> None:
        st["enc"] = session.run_step("encoder", GROUP_FRAMES, audio, st["enc"])[1]

    def srch() -> None:
        search(latent)

    def dec() -> None:
        st["dec"] = session.run_step("decoder", GROUP_FRAMES, latent.T[None].copy(), st["dec"])[1]

    def group() -> None:
        stream.decode(stream.encode(audio.reshape(-1)))

    return _row(label, enc, srch, dec, group, reps, group_ms, session.search_backend)


def _torch_row(model: Any, dev: str, session: Any, audio: Any, latent: Any, reps: int, group_ms: float) -> dict[str, Any]:
    import torch

    m = model.to(dev).eval()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    x = torch.from_numpy(audio).to(dev)
    z = torch.from_numpy(latent.T[None].copy()).to(dev)
    st = {"enc": [s.to(dev) for s in m.encoder.init_state(1)], "dec": [s.to(dev) for s in m.decoder.init_state(1)]}
    if dev == "cuda":
        from kernels.rvq import TritonRvqNumpy

        search: Any = TritonRvqNumpy(session.tables, session.strides)
        backend = "triton (CUDA graph, numpy in/out)"
    else:
        torch.set_num_threads(1)
        search, backend = session.new_searcher(), "numpy"

    @torch.inference_mode()
    def enc() -> None:
        st["enc"] = list(m.encoder.step(x, *st["enc"])[1:])
        sync()

    def srch() -> None:
        search(latent)

    @torch.inference_mode()
    def dec() -> None:
        st["dec"] = list(m.decoder.step(z, *st["dec"])[1:])
        sync()

    def group() -> None:
        enc()
        srch()
        dec()

    return _row(f"torch eager {dev.upper()} + {backend} search", enc, srch, dec, group, reps, group_ms, backend)


def _row(label: str, enc: Callable[[], None], srch: Callable[[], None], dec: Callable[[], None],
         group: Callable[[], None], reps: int, group_ms: float, backend: str) -> dict[str, Any]:
    t = {k: time_cpu(fn, warmup=5, min_reps=reps, max_reps=reps) for k, fn in
         (("enc", enc), ("search", srch), ("dec", dec), ("group", group))}
    return {"path": label, "status": "ok", "search": backend, "enc_p50_ms": t["enc"].p50_ms,
            "search_p50_ms": t["search"].p50_ms, "dec_p50_ms": t["dec"].p50_ms, "group_p50_ms": t["group"].p50_ms,
            "group_p99_ms": t["group"].p99_ms, "rtf": t["group"].p50_ms / group_ms}


def run_llama(work: Path) -> dict[str, Any]:
    try:
        import llama_cpp
    except ImportError:
        return {"status": "skipped", "reason": "llama-cpp-python is not installed here"}
    if not llama_cpp.llama_supports_gpu_offload():
        return {"status": "skipped", "reason": "llama-cpp-python was built without GPU offload (see README: "
                                                "CMAKE_ARGS=-DGGML_CUDA=on)"}
    model = ROOT / "models" / "default" / "llm.gguf"
    if not model.is_file():
        return {"status": "skipped", "reason": f"{model} is missing (make models)"}
    rows = []
    for layers in (0, -1):
        llm = llama_cpp.Llama(str(model), n_gpu_layers=layers, n_ctx=512, verbose=False)
        t0 = time.perf_counter()
        llm("The quick brown fox", max_tokens=64, temperature=0.0)
        rows.append({"n_gpu_layers": layers, "tokens_per_s": 64 / (time.perf_counter() - t0)})
        del llm
    return {"status": "ok", "rows": rows}


NEAREST_COLS = [("backend", "backend", ""), ("dtype", "dtype", ""), ("m", "M", ""), ("n", "N", ""), ("d", "D", ""),
                ("p50_ms", "p50 ms", ".4f"), ("gbs", "GB/s", ".0f"), ("pct_peak_bw", "% HBM peak", ".0f"),
                ("gflops", "GFLOP/s", ".0f"), ("pct_peak_flops", "% FLOP peak", ".0f"),
                ("speedup_vs_torch", "× torch", ".2f")]
STREAM_COLS = [("path", "path", ""), ("enc_p50_ms", "enc ms", ".3f"), ("search_p50_ms", "search ms", ".3f"),
               ("dec_p50_ms", "dec ms", ".3f"), ("group_p50_ms", "group p50 ms", ".3f"),
               ("group_p99_ms", "group p99 ms", ".3f"), ("rtf", "RTF", ".4f")]


def write_summary(out: Path, results: dict[str, Any], facts: dict[str, Any], total_s: float) -> None:
    (out / "gpu_check.json").write_text(json.dumps({"facts": facts, "env": environment(facts.get("gpu")),
                                                    "total_seconds": round(total_s, 1), **results}, indent=1))
    lines = ["# GPU check", "", f"Machine: {facts.get('gpu', 'no CUDA GPU')}; torch {facts.get('torch')} "
             f"(CUDA {facts.get('cuda')}), triton {facts.get('triton')}, onnxruntime {facts.get('onnxruntime')} "
             f"{facts.get('ort_providers', '')}, TensorRT {facts.get('tensorrt')}, llama-cpp-python "
             f"{facts.get('llama_cpp')}. Total {total_s:.0f} s (Triton autotune space: "
             f"{os.environ.get('LLMCODEC_AUTOTUNE')}).", "", "| part | status | seconds | detail |", "|---|---|---|---|"]
    for name, r in results.items():
        detail = r.get("error") or r.get("reason") or ""
        if name == "tests":
            detail = f"{r.get('passed')} passed, {r.get('failed')} failed, {r.get('skipped')} skipped"
        lines.append(f"| {name} | {r.get('status')} | {r.get('seconds')} | {detail} |")
    tests = results.get("tests", {})
    for f in tests.get("failures", []):
        lines.append(f"\n- FAILED {f['test']}: {f['message']}")
    if tests.get("skip_reasons"):
        lines += ["", "Skipped tests (reason: count):", ""]
        lines += [f"- {reason}: {n}" for reason, n in tests["skip_reasons"].items()]
    if results.get("nearest", {}).get("rows"):
        lines += ["", "## Nearest codeword (Triton kernel vs torch)", "",
                  markdown_table(results["nearest"]["rows"], NEAREST_COLS)]
    if results.get("codec_stream", {}).get("rows"):
        ok = [r for r in results["codec_stream"]["rows"] if r.get("status") == "ok"]
        lines += ["", "## Codec streaming, per 120 ms group (random `small` codec)", "", markdown_table(ok, STREAM_COLS)]
        lines += [f"- skipped {r['path']}: {r['reason']}" for r in results["codec_stream"]["rows"]
                  if r.get("status") == "skipped"]
    if results.get("llama_offload", {}).get("rows"):
        lines += ["", "## llama.cpp offload", ""] + [f"- n_gpu_layers={r['n_gpu_layers']}: {r['tokens_per_s']:.1f} tok/s"
                                                   for r in results["llama_offload"]["rows"]]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="summary directory")
    p.add_argument("--parts", nargs="+", default=["tests", "nearest", "codec_stream", "llama_offload"],
                   choices=["tests", "nearest", "codec_stream", "llama_offload"])
    p.add_argument("--reps", type=int, default=200, help="timed groups per streaming path")
    p.add_argument("--timeout", type=int, default=300, help="seconds per subprocess part")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    facts = gpu_facts()
    print(json.dumps(facts), flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        runners = {"tests": lambda: run_tests(args.out, args.timeout),
                   "nearest": lambda: run_nearest(args.out, args.timeout),
                   "codec_stream": lambda: run_codec_stream(work, args.reps),
                   "llama_offload": lambda: run_llama(work)}
        for name in args.parts:
            run_part(name, runners[name], results)
            write_summary(args.out, results, facts, time.perf_counter() - t0)
    print((args.out / "gpu_check.md").read_text())
    return 1 if results.get("tests", {}).get("status") in ("failed", "error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
