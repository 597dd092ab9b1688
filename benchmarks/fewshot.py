"""Few-shot task accuracy / quality on labelled audio folders, through llama.cpp and a codec bundle.

    python -m benchmarks.fewshot --task classify --data DIR --ways N --shots K [--repeats R] [--episodes E]
        [--seed S] [--layers semantic|all] [--induction on|off] --model LLM.gguf --codec BUNDLE [--out F.jsonl]
    python -m benchmarks.fewshot --task denoise --data DIR [--demos SET | --shots K] [--episodes E] ...

classify: DIR holds one sub-folder per label (``DIR/<label>/*.wav``; ``python -m scripts.make_demos
--labelled-out`` writes such views of ESC-50, RAVDESS and FSDD). Each episode draws N classes, K
demonstrations per class and one query from one of those classes, never among the demonstrations;
prints one progress line per episode and ends with
``accuracy=<a> ci95=[<lo>,<hi>] chance=<1/N> episodes=<E>`` (Wilson score interval).
denoise: DIR/clean and DIR/noisy hold pairs with matching names; demonstrations come from --demos
(a denoise demonstration set) or are K other pairs of DIR drawn per file; reports PESQ-wb, STOI
and SI-SDR of the noisy input and of the output, ending with one ``key=value`` summary line.
Every clip is encoded once per run. --out writes one JSON line per episode plus a summary line.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from runtime.cli import fatal, run_cli  # noqa: E402
from runtime.lm_flags import add_llm_flags  # noqa: E402

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")


class BenchError(ValueError):
    """Bad benchmark data or arguments (one-line message)."""


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95 % for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXT and p.is_file())


def scan_labelled(data: Path) -> dict[str, list[Path]]:
    """``DIR/<label>/*.wav`` -> {label: sorted files}; labels without audio are skipped."""
    if not data.is_dir():
        raise BenchError(f"data folder {data} does not exist")
    groups = {d.name: _audio_files(d) for d in sorted(data.iterdir()) if d.is_dir()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise BenchError(f"{data} has no <label>/ sub-folders with audio files "
                         "(build labelled views with python -m scripts.make_demos --labelled-out DIR)")
    return groups


def draw_episode(rng: np.random.Generator, groups: dict[str, list[Path]], ways: int,
                 shots: int) -> tuple[list[tuple[Path, str]], tuple[Path, str]]:
    """N classes, K demonstrations each (shuffled order) and a query from one of them, not a demo."""
    labels = sorted(groups)
    classes = [labels[i] for i in rng.choice(len(labels), ways, replace=False)]
    query_label = classes[int(rng.integers(ways))]
    demos, query = [], None
    for c in classes:
        k = shots + (c == query_label)
        picks = [groups[c][i] for i in rng.choice(len(groups[c]), k, replace=False)]
        if c == query_label:
            query = (picks.pop(), c)
        demos += [(p, c) for p in picks]
    order = rng.permutation(len(demos))
    return [demos[i] for i in order], query


def check_classify_data(groups: dict[str, list[Path]], ways: int, shots: int) -> None:
    if ways < 2 or shots < 1:
        raise BenchError(f"need --ways >= 2 and --shots >= 1, got {ways} and {shots}")
    eligible = [k for k, v in groups.items() if len(v) >= shots + 1]
    if len(eligible) < len(groups):
        small = sorted(set(groups) - set(eligible))
        raise BenchError(f"labels {small} have fewer than shots+1 = {shots + 1} clips")
    if len(groups) < ways:
        raise BenchError(f"{ways}-way episodes need {ways} labels, the data has {len(groups)}: {sorted(groups)}")


class TokenCache:
    """Each clip encoded once per run: path -> AudioTokens of its fixed-length prompt clip."""

    def __init__(self, engine, seconds: float, crop: str):
        self.engine, self.seconds, self.crop, self.memo = engine, seconds, crop, {}

    def __call__(self, path: Path):
        if path not in self.memo:
            self.memo[path] = self.engine.clip_tokens(self.engine.load_clip(path, self.seconds, self.crop))
        return self.memo[path]


def run_classify(a: argparse.Namespace, engine, opts, log) -> dict:
    from runtime.prompt import Demo
    from runtime.tasks.classify import classify_tokens

    groups = scan_labelled(a.data)
    check_classify_data(groups, a.ways, a.shots)
    rng = np.random.default_rng(a.seed)
    tokens = TokenCache(engine, opts.clip_seconds, opts.crop)
    correct, times = 0, []
    for e in range(a.episodes):
        demos, (qpath, qlabel) = draw_episode(rng, groups, a.ways, a.shots)
        t0 = time.perf_counter()
        r = classify_tokens(engine, [Demo(tokens(p), lab) for p, lab in demos], tokens(qpath), opts, a.method)
        times.append(time.perf_counter() - t0)
        correct += r.label == qlabel
        print(f"episode {e + 1}/{a.episodes}: query={qlabel} pred={r.label} correct={int(r.label == qlabel)} "
              f"acc={correct / (e + 1):.3f}", flush=True)
        log({"episode": e, "query": str(qpath), "label": qlabel, "pred": r.label, "correct": r.label == qlabel,
             "demos": [[str(p), lab] for p, lab in demos], "logprobs": r.logprobs,
             "prompt_tokens": r.prompt_tokens, "seconds": round(times[-1], 4)})
    lo, hi = wilson(correct, a.episodes)
    return {"accuracy": correct / a.episodes, "ci95": [lo, hi], "chance": 1 / a.ways, "episodes": a.episodes,
            "episode_ms_p50": float(np.percentile(times, 50) * 1e3), "clips_encoded": len(tokens.memo),
            "final_line": f"accuracy={correct / a.episodes:.4f} ci95=[{lo:.4f},{hi:.4f}] "
                          f"chance={1 / a.ways:.4f} episodes={a.episodes}"}


def scan_pairs(data: Path) -> list[str]:
    """Names present in both DIR/clean and DIR/noisy (a noisy file without its clean one is an error)."""
    clean, noisy = data / "clean", data / "noisy"
    if not clean.is_dir() or not noisy.is_dir():
        raise BenchError(f"denoise data {data} must hold clean/ and noisy/ folders with matching file names")
    c, n = {p.name for p in _audio_files(clean)}, {p.name for p in _audio_files(noisy)}
    if n - c:
        raise BenchError(f"{noisy} files without a clean reference in {clean}: {sorted(n - c)[:5]}")
    if not n:
        raise BenchError(f"{noisy} holds no audio files")
    return sorted(n)


def run_denoise(a: argparse.Namespace, engine, opts, log) -> dict:
    from runtime.audio import read_audio
    from runtime.metrics import speech_metrics
    from runtime.tasks.demos import load_demo_set
    from runtime.tasks.denoise import denoise_pcm, pair_demos

    names = scan_pairs(a.data)
    rng = np.random.default_rng(a.seed)
    fixed = None
    if a.demos is not None:
        rows = load_demo_set(a.demos, "denoise").select_first(opts.shots)
        fixed = pair_demos(engine, [(r.input, r.output) for r in rows], opts)
    elif len(names) < opts.shots + 1:  # shots is an int here (None only with --demos)
        raise BenchError(f"{len(names)} pairs in {a.data}: need shots+1 = {opts.shots + 1} without --demos")
    memo: dict = {}

    def demo(name: str):
        if name not in memo:
            memo[name] = pair_demos(engine, [(a.data / "noisy" / name, a.data / "clean" / name)], opts)[0]
        return memo[name]

    files = [names[i] for i in rng.permutation(len(names))[:a.episodes]]
    rows_out = []
    for e, name in enumerate(files):
        others = [x for x in names if x != name]
        demos = fixed or [demo(others[i]) for i in rng.choice(len(others), opts.shots, replace=False)]
        clean = read_audio(a.data / "clean" / name, engine.sample_rate)
        noisy = read_audio(a.data / "noisy" / name, engine.sample_rate)
        t0 = time.perf_counter()
        out = denoise_pcm(engine, demos, noisy, opts).pcm
        secs = time.perf_counter() - t0
        m_in, m_out = speech_metrics(clean, noisy), speech_metrics(clean, out)
        rec = {"episode": e, "file": name, "seconds": round(secs, 4), "rtf": secs / (len(noisy) / engine.sample_rate),
               **{f"{k}_in": v for k, v in m_in.items()}, **{f"{k}_out": v for k, v in m_out.items()}}
        rows_out.append(rec)
        print(f"file {e + 1}/{len(files)} {name}: " + " ".join(f"{k}={rec[k]:.3f}" for k in
              ("pesq_wb_in", "pesq_wb_out", "stoi_in", "stoi_out", "si_sdr_in", "si_sdr_out")), flush=True)
        log(rec)
    keys = [f"{m}_{s}" for m in ("pesq_wb", "stoi", "si_sdr") for s in ("in", "out")]
    summary = {k: float(np.nanmean([r[k] for r in rows_out])) for k in keys}
    summary["rtf_p50"] = float(np.median([r["rtf"] for r in rows_out]))
    line = " ".join(f"{k}={summary[k]:.4f}" for k in keys) + f" files={len(rows_out)}"
    return {**summary, "files": len(rows_out), "final_line": line}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fewshot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, choices=("classify", "denoise"))
    p.add_argument("--data", required=True, type=Path, help="DIR/<label>/*.wav (classify) or DIR/{clean,noisy}")
    p.add_argument("--model", type=Path, default=None, help="LLM GGUF (default: models/default/llm.gguf)")
    p.add_argument("--codec", type=Path, default=None, help="codec bundle (default: models/default/codec)")
    p.add_argument("--ways", type=int, default=2, help="classes per episode (classify)")
    p.add_argument("--shots", type=int, default=None,
                   help="demonstrations per class (classify, default 1) or denoise pairs (default: every "
                        "pair of --demos, else 1 drawn from DIR)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--episodes", type=int, default=20, help="episodes (classify) or files (denoise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", choices=("semantic", "all"), default=None,
                   help="default: semantic (classify), all (denoise)")
    p.add_argument("--layout", choices=("major", "interleaved"), default="major")
    p.add_argument("--induction", choices=("on", "off"), default="on")
    p.add_argument("--method", choices=("score", "greedy", "calibrated"), default="score", help="classify decoding")
    p.add_argument("--clip-seconds", type=float, default=None, help="default: 1.0 classify, 0.96 denoise")
    p.add_argument("--crop", choices=("start", "loudest"), default="start")
    p.add_argument("--demos", type=Path, default=None, help="denoise demonstration set (else drawn from DIR)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=None, help="JSON lines: one per episode, then a summary")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_llm_flags(p)
    return p


def run(a: argparse.Namespace) -> int:
    from runtime.defaults import resolve
    from runtime.lm_flags import draft_kwargs, engine_kwargs
    from runtime.tasks import TaskOptions, open_engine

    a.model, a.codec, _ = resolve(a.task, a.model, a.codec, None, need_demos=False)
    if a.shots is None:
        a.shots = None if (a.task == "denoise" and a.demos is not None) else 1
    if a.episodes < 1:
        raise BenchError(f"--episodes must be >= 1, got {a.episodes}")
    if a.out is not None and a.out.exists() and not a.force:
        raise BenchError(f"{a.out} exists (pass --force to overwrite)")
    opts = TaskOptions(shots=a.shots, repeats=a.repeats, layers=a.layers, layout=a.layout,
                       induction=a.induction == "on", temperature=a.temperature, seed=a.seed,
                       clip_seconds=a.clip_seconds, crop=a.crop, **draft_kwargs(a)).with_defaults(a.task)
    engine = open_engine(a.model, a.codec, n_ctx=a.n_ctx, threads=a.threads, seed=a.seed, **engine_kwargs(a))
    records: list[dict] = []
    fn = run_classify if a.task == "classify" else run_denoise
    summary = fn(a, engine, opts, records.append)
    if a.out is not None:
        from benchmarks.common import environment, write_jsonl

        a.out.parent.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "force"}
        write_jsonl(a.out, records + [{"summary": True, "config": config, **summary, "lm_stats": vars(engine.lm.stats),
                                       "env": environment(packages=["llama-cpp-python", "onnxruntime"])}])
    print(summary["final_line"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from runtime.audio import AudioError
    from runtime.bundle import BundleError
    from runtime.lm import ModelLoadError
    from runtime.lm_errors import ContextOverflowError, VocabularyMismatchError
    from runtime.metrics import MetricsUnavailable
    from runtime.tasks import DemoError, TaskError

    try:
        return run(a)
    except (BenchError, AudioError, BundleError, ModelLoadError, ContextOverflowError, VocabularyMismatchError,
            DemoError, TaskError, MetricsUnavailable, FileNotFoundError) as e:
        return fatal(str(e))


if __name__ == "__main__":
    sys.exit(run_cli(main))
