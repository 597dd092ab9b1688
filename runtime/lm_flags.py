"""Command-line flags shared by every CLI that runs the LLM: GPU offload, draft decoding, prefix cache,
the audio-head GGUF."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.tasks.common import DRAFTS


def add_llm_flags(p: argparse.ArgumentParser) -> None:
    """--n-gpu-layers, --draft, --max-draft, --parallel, --spin, --prefix-cache-dir, --no-prefix-cache, --head."""
    p.add_argument("--n-gpu-layers", type=int, default=0,
                   help="LLM layers offloaded to the GPU (-1 = all; needs llama-cpp-python built with CUDA)")
    # Default auto: n-gram drafts were accepted 99.5 % of the time on real denoise spans of the default pair,
    # 1.3-1.9x plain tokens/s (benchmarks/results/llm_speed_tasks_t*.md); with rare acceptance a pass costs
    # little more than a plain step, because drafts are only proposed where the prompt has a match.
    p.add_argument("--draft", choices=DRAFTS, default="auto",
                   help="greedy audio spans: draft-and-verify decoding (auto: n-gram drafts; greedy, equal to "
                        "one-token decoding except at near-ties on quantised LLMs, README \"Draft decoding\")")
    p.add_argument("--max-draft", type=int, default=8, help="draft tokens verified per batch")
    # Default 4: denoising a file decodes 4 chunks side by side, RTF 0.55 -> 0.38 on the 2-core CPU
    # (README "Draft decoding"); the live stream decodes each chunk as it comes.
    p.add_argument("--parallel", type=int, default=4,
                   help="denoise: chunks of a file decoded side by side, one KV sequence each (greedy only; "
                        "the same tokens on f32 LLMs, on quantised ones up to near-ties, README \"Draft decoding\"); "
                        "1 = one chunk after another")
    p.add_argument("--spin", choices=("auto", "on", "off"), default="auto",
                   help="llama.cpp's OpenMP workers spin between operations (on: fastest on cores the LLM has to "
                        "itself, 0.60 vs 0.81 live denoise RTF on 2 idle cores) or sleep (off: safe beside other "
                        "busy programs); auto: spin when enough cores are idle at start (runtime/threads.py). "
                        "An exported OMP_WAIT_POLICY wins")
    p.add_argument("--prefix-cache-dir", type=Path, default=None,
                   help="where demonstration-prefix KV states are cached "
                        "(default: $LLMCODEC_CACHE or ~/.cache/llmcodec-edge)")
    p.add_argument("--no-prefix-cache", action="store_true",
                   help="evaluate the demonstrations at every start instead of reading/writing the cache")
    p.add_argument("--head", choices=("auto", "full"), default="auto",
                   help="auto: generation tasks use the model's audio-head GGUF (<model>.audio-head.gguf beside "
                        "it, written by `make models` / `python -m runtime.lm_head`) when it exists: the same "
                        "tokens, about 2x faster per token on a CPU; full: always the full GGUF")


def engine_kwargs(a: argparse.Namespace) -> dict:
    """`runtime.tasks.open_engine` keyword arguments from the flags. Call it right before opening the
    engine: it also sets llama.cpp's thread wait policy (``--spin``, `runtime.threads`), which must
    happen before OpenMP starts."""
    from runtime.threads import apply_wait_policy

    apply_wait_policy(getattr(a, "spin", "auto"), getattr(a, "threads", None))
    cache = False if a.no_prefix_cache else (a.prefix_cache_dir or True)
    # Label scoring needs the whole softmax, so classification always runs the full GGUF.
    head = getattr(a, "head", "auto") == "auto" and getattr(a, "task", None) != "classify"
    return {"n_gpu_layers": a.n_gpu_layers, "prefix_cache": cache, "audio_head": head}


def draft_kwargs(a: argparse.Namespace) -> dict:
    """`runtime.tasks.TaskOptions` keyword arguments from the flags."""
    return {"draft": a.draft, "max_draft": a.max_draft, "parallel": a.parallel}
