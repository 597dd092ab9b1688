"""``python -m runtime.run``: one few-shot audio task on a frozen LLM with a codec bundle.

    python -m runtime.run --task classify   --demos DIR --input clip.wav   --model LLM.gguf --codec BUNDLE
    python -m runtime.run --task tts        --demos DIR --input "an audio of (1+1)" --output out.wav ...
    python -m runtime.run --task text2sound --demos DIR --input dog        --output dog.wav ...
    python -m runtime.run --task denoise    --demos DIR --input noisy.wav  --output clean.wav ...

classify prints the predicted label, then ``logprob <label> <value>`` per label (best first);
generation tasks write a wav (never over an existing file without --force). Errors are one line
on stderr and exit status 1; Ctrl-C exits 130 without writing --output (runtime/cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

from runtime.cli import check_output_file, fatal, reraise_interrupt, run_cli  # noqa: E402
from runtime.tasks import TASKS  # noqa: E402
from runtime.lm_flags import add_llm_flags, draft_kwargs, engine_kwargs  # noqa: E402
from runtime.tasks.common import DEFAULT_CLIP_SECONDS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--demos", type=Path, default=None,
                   help="demonstration set folder (manifest.csv); default: models/default/demos/<task set>")
    p.add_argument("--input", required=True, help="audio file (classify, denoise) or text (tts, text2sound)")
    p.add_argument("--output", type=Path, default=None, help="output wav (generation tasks)")
    p.add_argument("--model", type=Path, default=None,
                   help="LLM GGUF the codec was built for; default: models/default/llm.gguf (Gemma 3 270M)")
    p.add_argument("--codec", type=Path, default=None, help="codec bundle directory; default: models/default/codec")
    p.add_argument("--shots", type=int, default=None,
                   help="demonstrations per label (classify) or in total (others); default: all")
    p.add_argument("--repeats", type=int, default=1, help="times the demonstration block is repeated")
    p.add_argument("--layers", choices=("semantic", "all"), default=None,
                   help="codec layers in the prompt (default: semantic for classify, all otherwise)")
    p.add_argument("--layout", choices=("major", "interleaved"), default="major",
                   help="layer-major (official) or group-interleaved audio spans")
    p.add_argument("--induction", choices=("on", "off"), default="on", help="task instruction before the demos")
    p.add_argument("--clip-seconds", type=float, default=None,
                   help=f"fixed prompt clip duration (default: the set's info.json, else {DEFAULT_CLIP_SECONDS})")
    p.add_argument("--crop", choices=("start", "loudest"), default="start",
                   help="part of a longer clip to keep")
    p.add_argument("--method", choices=("score", "greedy", "calibrated"), default="score",
                   help="classify: score every label, the official constrained greedy decoding, or scores "
                        "calibrated by a silent query (contextual calibration)")
    p.add_argument("--threads", type=int, default=None, help="LLM and onnxruntime threads")
    p.add_argument("--n-ctx", type=int, default=2048, help="LLM context size in tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu", help="onnxruntime provider")
    p.add_argument("--json", action="store_true", help="also print a JSON line with the result")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    add_llm_flags(p)
    return p


def check_args(a: argparse.Namespace) -> str | None:
    """An error message for inconsistent arguments (checked before any model is loaded), else None."""
    if a.task != "classify":
        if a.output is None:
            return f"--task {a.task} writes audio: pass --output FILE.wav"
        err = check_output_file(a.output, a.force)
        if err:
            return err
    if a.task in ("classify", "denoise") and not Path(a.input).is_file():
        what = "is not a file" if Path(a.input).exists() else "does not exist"
        return f"input audio file {a.input} {what}"
    if a.n_ctx < 16:
        return f"--n-ctx must be >= 16, got {a.n_ctx}"
    return None


def run_task(a: argparse.Namespace, engine, demo_set, opts) -> dict:
    from runtime.audio import write_audio
    from runtime.tasks.classify import classify
    from runtime.tasks.denoise import denoise
    from runtime.tasks.text2sound import text2sound
    from runtime.tasks.tts import tts

    if a.task == "classify":
        r = classify(engine, demo_set, Path(a.input), opts, a.method)
        ranked = sorted(r.logprobs.items(), key=lambda kv: -kv[1])
        print(r.label if r.label is not None else "(no label: greedy decoding matched none)")
        for lab, lp in ranked:
            print(f"logprob {lab} {lp:.4f}")
        return {"label": r.label, "logprobs": r.logprobs, "prompt_tokens": r.prompt_tokens}
    fn: Any = {"tts": tts, "text2sound": text2sound, "denoise": denoise}[a.task]
    gen = fn(engine, demo_set, Path(a.input) if a.task == "denoise" else a.input, opts)
    write_audio(a.output, gen.pcm, engine.sample_rate)
    secs = len(gen.pcm) / engine.sample_rate
    print(f"wrote {a.output} ({secs:.2f} s, prompt {gen.prompt_tokens} tokens)")
    return {"output": str(a.output), "seconds": secs, "prompt_tokens": gen.prompt_tokens}


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    err = check_args(a)
    if err:
        return fatal(err)
    from runtime.audio import AudioError
    from runtime.bundle import BundleError
    from runtime.lm import ModelLoadError
    from runtime.lm_errors import ContextOverflowError, VocabularyMismatchError
    from runtime.defaults import resolve
    from runtime.tasks import DemoError, TaskError, TaskOptions, load_demo_set, open_engine

    known = (AudioError, BundleError, ModelLoadError, ContextOverflowError, VocabularyMismatchError,
             DemoError, TaskError, FileNotFoundError)
    t0 = time.perf_counter()
    try:
        a.model, a.codec, a.demos = resolve(a.task, a.model, a.codec, a.demos)
        demo_set = load_demo_set(a.demos, a.task)
        opts = TaskOptions(shots=a.shots, repeats=a.repeats, layers=a.layers, layout=a.layout,
                           induction=a.induction == "on", temperature=a.temperature, seed=a.seed,
                           clip_seconds=a.clip_seconds, crop=a.crop, **draft_kwargs(a))
        opts.with_defaults(a.task, demo_set.info)  # option errors before the models load
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            engine = open_engine(a.model, a.codec, n_ctx=a.n_ctx, threads=a.threads, seed=a.seed,
                                 provider=a.provider, **engine_kwargs(a))
        for w in caught:  # e.g. onnxruntime fell back from CUDA to CPU (prefix-cache warnings print themselves)
            print(f"warning: {w.message}", file=sys.stderr)
        result = run_task(a, engine, demo_set, opts)
    except known as e:
        return fatal(str(e))
    except ImportError as e:
        reraise_interrupt(e)
        return fatal(f"{e} (install the runtime with `pip install '.[cpu]'`)")
    if a.json:
        print(json.dumps({"task": a.task, **result, "seconds_total": round(time.perf_counter() - t0, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
