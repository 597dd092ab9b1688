"""What the output head costs: one ``llama_decode`` of n tokens with logits on the last row only vs on every row.

    python -m benchmarks.llm_head_cost [--model models/default/llm.gguf] [--threads 2] [--n 1 4 16 64]

Draft-and-verify decoding needs a logits row for every draft position, and a small LLM with a large
vocabulary (Gemma 3 270M: 640-d, 262,144-row tied head) spends much of each row in the head, so a
verification row costs a good part of a one-token step. Also measured: llama.cpp's embeddings mode
(hidden states instead of logits), which would let the runtime score only the codec's ~35k allowed ids
itself if it skipped the head. Prints a Markdown table and writes JSON lines.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import runtime.threads  # noqa: F401  (the one thread environment, before llama.cpp loads)
from benchmarks.common import RESULTS, environment, markdown_table
from runtime.cli import run_cli
from runtime.defaults import default_llm

COLUMNS = [("mode", "context", ""), ("n", "tokens", ""), ("last_ms", "logits: last row ms", ".1f"),
           ("all_ms", "logits: every row ms", ".1f"), ("per_row_all_ms", "ms / row (every row)", ".2f"),
           ("head_share", "head share of a verify row", ".0%")]


def time_decode(lc: Any, llm: Any, n: int, every_row: bool, reps: int) -> float:
    """Best of ``reps`` wall times (s) of one decode of ``n`` fresh tokens from an empty cache."""
    batch = lc.llama_batch_init(512, 0, 1)
    try:
        best = float("inf")
        for _ in range(reps):
            lc.llama_memory_clear(lc.llama_get_memory(llm.ctx), True)
            for i in range(n):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + i, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, every_row or i == n - 1
            batch.n_tokens = n
            t0 = time.perf_counter()
            if lc.llama_decode(llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        lc.llama_batch_free(batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.llm_head_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="GGUF (default: models/default/llm.gguf)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "llm_head_cost.jsonl")
    args = p.parse_args(argv)
    import llama_cpp as lc

    model = args.model or default_llm()
    rows = []
    for mode in ("logits", "embeddings"):
        llm = lc.Llama(model_path=str(model), n_ctx=512, n_batch=512, n_threads=args.threads, verbose=False,
                       embedding=mode == "embeddings")
        for n in args.n:
            last = time_decode(lc, llm, n, False, args.reps)
            every = time_decode(lc, llm, n, True, args.reps)
            rows.append({"mode": mode, "n": n, "last_ms": 1e3 * last, "all_ms": 1e3 * every,
                         "per_row_all_ms": 1e3 * every / n, "head_share": max(0.0, (every - last) / every)})
            print(json.dumps(rows[-1]), flush=True)
        del llm
    env = environment(packages=["llama-cpp-python"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "model": model.name, "threads": args.threads, "env": env}) + "\n")
    table = markdown_table(rows, COLUMNS)
    args.out.with_suffix(".md").write_text(f"# Output-head cost, {model.name}, {args.threads} threads "
                                           f"(load {env['loadavg_1m']})\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
