"""Few-shot engine speed on llama.cpp: prefill, generation, prefix reuse, allowed-mask overhead.

``python -m benchmarks.llm_speed --model M.gguf [--threads N --n-ctx 2048 --prefix-tokens 1024
--gen-tokens 64]``; without --model a tiny LLaMA with the LLaMA-2 vocabulary is built
(--tiny-dim/--tiny-layers). Prints one JSON line per measurement, then a Markdown table.
``--tasks`` adds the task-level figures on a real pair (default: models/default; benchmarks/llm_draft.py):
plain vs draft-and-verify decoding on real denoise spans (tokens/s, acceptance, agreement), the
denoise real-time factor, batched vs sequential label scoring, cold vs cached-prefix start.
Helpers are local (benchmarks/common.py did not exist when this was written).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.cli import die, run_cli
from runtime.lm import FrozenLM, ModelLoadError, select_token

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    import llama_cpp

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    units = "AVX-512" if "AVX512 = 1" in info else "AVX2" if "AVX2 = 1" in info else "baseline"
    return {"device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
            "llama_cpp": f"{llama_cpp.__version__} ({units} build)", "numpy": np.__version__, "git": sha or "unknown",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp: spin briefly, then sleep)")}


def _time(fn: Callable[[], object], reps: int, warmup: int) -> np.ndarray:
    """Seconds per call of ``fn`` over ``reps`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.asarray(out)


def _row(name: str, secs: np.ndarray, tokens: int, **extra) -> dict:
    p50, p99 = np.percentile(secs, 50), np.percentile(secs, 99)
    return {"bench": name, "tokens": tokens, "p50_ms": round(p50 * 1e3, 3), "p99_ms": round(p99 * 1e3, 3),
            "tokens_per_s": round(tokens / p50, 1), **extra}


def run(lm: FrozenLM, prefix_tokens: int, query_tokens: int, gen_tokens: int, reps: int,
        warmup: int, seed: int = 0) -> list[dict]:
    """All measurements on one model; returns one dict per measurement."""
    rng = np.random.default_rng(seed)
    prefix = [lm.bos_id] + rng.integers(3, lm.n_vocab, prefix_tokens - 1).tolist()
    queries = [rng.integers(0, lm.n_vocab, query_tokens).tolist() for _ in range(reps + warmup)]
    rows = []

    def prefill():
        lm.reset()
        lm.logits(prefix)
    rows.append(_row("prefill", _time(prefill, reps, warmup), prefix_tokens))

    it = iter(queries * 2)

    def cold_query():
        lm.reset()
        lm.logits(prefix + next(it))
    cold = _time(cold_query, reps, warmup)
    lm.eval_prefix(prefix)

    def warm_query():
        lm.eval(next(it))
    warm = _time(warm_query, reps, warmup)
    rows.append(_row("query_cold", cold, prefix_tokens + query_tokens))
    rows.append(_row("query_cached_prefix", warm, query_tokens,
                     speedup_vs_cold=round(float(np.median(cold) / np.median(warm)), 2)))

    prompt = prefix + queries[0]
    mask = np.zeros(lm.n_vocab, dtype=bool)
    mask[rng.choice(lm.n_vocab, 3248, replace=False)] = True  # layer-1 word table size
    for name, allowed in (("generate_unmasked", None), ("generate_masked", mask)):
        secs = _time(lambda: lm.generate(prompt, gen_tokens, allowed=allowed), reps, warmup)
        rows.append(_row(name, secs, gen_tokens))
    un, ma = rows[-2]["p50_ms"], rows[-1]["p50_ms"]
    rows[-1]["mask_overhead_ms_per_token"] = round((ma - un) / gen_tokens, 4)
    # The mask's own cost per step, isolated from decode time (which dominates and is noisy).
    logits = lm.logits(prompt)
    for name, m in (("select_unmasked", None), ("select_masked", mask)):
        secs = _time(lambda: select_token(logits, m), 200 * reps, 10)
        rows.append(_row(name, secs, 1))
    return rows


def markdown(rows: Sequence[dict], env: dict, model: str) -> str:
    lines = [f"LLM engine speed: `{model}` on {env['device']}, llama_cpp {env['llama_cpp']}, git {env['git']}",
             "", "| bench | tokens | p50 ms | p99 ms | tokens/s | note |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        note = ", ".join(f"{k}={r[k]}" for k in ("speedup_vs_cold", "mask_overhead_ms_per_token") if k in r)
        lines.append(f"| {r['bench']} | {r['tokens']} | {r['p50_ms']} | {r['p99_ms']} | {r['tokens_per_s']} | {note} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.llm_speed", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: build a tiny one)")
    ap.add_argument("--tiny-dim", type=int, default=256)
    ap.add_argument("--tiny-layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--query-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json-out", type=Path, default=None, help="also append the JSON lines here")
    ap.add_argument("--tasks", action="store_true",
                    help="task-level figures on a real pair (draft decoding, labels, start, denoise RTF)")
    ap.add_argument("--skip-synthetic", action="store_true", help="with --tasks: only the task-level figures")
    ap.add_argument("--codec", type=Path, default=None, help="--tasks: codec bundle (default: models/default/codec)")
    ap.add_argument("--denoise-files", type=Path, nargs="+", default=None,
                    help="--tasks: noisy recordings (default: examples/noisy_*.wav)")
    ap.add_argument("--max-chunks", type=int, default=8, help="--tasks: denoise chunks (spans) decoded per drafter")
    ap.add_argument("--max-draft", type=int, default=8, help="--tasks: draft tokens per verification batch")
    ap.add_argument("--parallel", type=int, default=4,
                    help="--tasks: denoise chunks decoded side by side in the parallel rows (runtime.lm_parallel)")
    a = ap.parse_args(argv)
    if a.tasks:
        return _main_tasks(a)
    if a.prefix_tokens + a.query_tokens + a.gen_tokens > a.n_ctx:
        die(f"prefix+query+gen tokens ({a.prefix_tokens + a.query_tokens + a.gen_tokens}) exceed --n-ctx {a.n_ctx}")
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if model is None:
            from scripts.tiny_llm import build_tiny_llm
            model = build_tiny_llm(Path(tmp) / "tiny.gguf", dim=a.tiny_dim, n_layers=a.tiny_layers,
                                   n_heads=max(1, a.tiny_dim // 64), n_kv_heads=max(1, a.tiny_dim // 64),
                                   ctx=a.n_ctx)
        elif not model.is_file():
            die(f"model not found: {model}")
        try:
            lm = FrozenLM(model, n_ctx=a.n_ctx, n_threads=a.threads, n_gpu_layers=a.n_gpu_layers)
        except ModelLoadError as e:
            die(str(e))
        env = {**_env(), "model": model.name if a.model is None else str(model), "threads": a.threads,
               "n_gpu_layers": a.n_gpu_layers}
        if a.model is None:
            env["model"] = f"tiny dim {a.tiny_dim} x {a.tiny_layers} layers (LLaMA-2 vocab)"
        rows = [{**r, **env} for r in run(lm, a.prefix_tokens, a.query_tokens, a.gen_tokens, a.reps, a.warmup)]
    _emit(rows, a.json_out)
    print(markdown(rows, env, env["model"]))
    return 0


def _emit(rows: list[dict], json_out: str | Path | None) -> None:
    """One JSON line per row on stdout (and appended to ``json_out``), then a blank line."""
    for r in rows:
        print(json.dumps(r))
    if json_out:
        with open(json_out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print()


def _main_tasks(a: argparse.Namespace) -> int:
    from benchmarks.llm_draft import run_tasks
    from runtime.defaults import DEFAULT_ROOT

    files = a.denoise_files or sorted((DEFAULT_ROOT.parents[1] / "examples").glob("noisy_*.wav"))
    env = {**_env(), "model": str(a.model or "models/default/llm.gguf"), "threads": a.threads,
           "n_gpu_layers": a.n_gpu_layers, "denoise_files": [str(f) for f in files]}
    rows = []
    if not a.skip_synthetic and a.model is not None:
        lm = FrozenLM(a.model, n_ctx=a.n_ctx, n_threads=a.threads, n_gpu_layers=a.n_gpu_layers)
        rows += run(lm, a.prefix_tokens, a.query_tokens, a.gen_tokens, a.reps, a.warmup)
        del lm
    rows += run_tasks(a.model, a.codec, files, a.threads, a.n_ctx, a.n_gpu_layers, a.max_chunks, a.max_draft, a.reps,
                      parallel=a.parallel)
    rows = [{**r, **env} for r in rows]
    _emit(rows, a.json_out)
    print(task_markdown(rows, env))
    return 0


def task_markdown(rows: Sequence[dict], env: dict) -> str:
    keys = ("head_rows", "tokens", "tokens_per_s", "p50_ms", "speedup_vs_plain", "acceptance_rate", "verify_passes",
            "spans_identical_to_plain", "token_agreement_with_plain", "rtf", "speedup_vs_sequential",
            "max_abs_diff_nat", "load_ms", "prefix_ms", "total_ms", "prefix_speedup", "parallel")
    lines = [f"LLM task speed: `{env['model']}` on {env['device']}, {env['threads']} threads, "
             f"llama_cpp {env['llama_cpp']}, git {env['git']}", "", "| bench | figures |", "|---|---|"]
    for r in rows:
        name = r["bench"] + (f" ({r['head']} head)" if r.get("head") else "")
        lines.append(f"| {name} | " + ", ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
