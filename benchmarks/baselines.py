"""Few-shot classification by the LLM next to non-LLM baselines on the very same episodes.

    python -m benchmarks.baselines [--quick] [--episodes E] [--ways N ...] [--shots K ...] [--no-llm]
        [--model GGUF] [--codec BUNDLE] [--out DIR] [--force]

Episodes on held-out ESC-50 (``../shared/data/esc50``, labels from ``meta.csv``) are drawn by
``benchmarks.fewshot.draw_episode`` with one seed per (N, K), so every method sees the same
demonstrations and query. Methods: the LLM (``runtime.tasks.classify.classify_tokens``) for each
configuration of the paper's Table 2 grid (induction on/off, repeats, semantic vs all layers), and
a control with the query replaced by silence (the LLM's label prior), and
two nearest-demonstration baselines that need no LLM: cosine between bags of codec tokens (the tokens
the LLM sees, all three layers) and Euclidean distance between mean MFCC vectors of the same clips.
Accuracy with a Wilson 95 % interval everywhere.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from benchmarks.fewshot import draw_episode, wilson  # noqa: E402
from benchmarks.heldout import SHARED  # noqa: E402

Episode = tuple[list[tuple[Path, str]], tuple[Path, str]]


def esc50_groups(data: Path = SHARED) -> dict[str, list[Path]]:
    """label -> sorted clips of the held-out ESC-50 folder (labels from ``meta.csv``)."""
    groups: dict[str, list[Path]] = {}
    with open(data / "esc50" / "meta.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = data / "esc50" / "audio" / row["filename"]
            if path.is_file():
                groups.setdefault(row["category"], []).append(path)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def episodes(groups: dict[str, list[Path]], ways: int, shots: int, n: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [draw_episode(rng, groups, ways, shots) for _ in range(n)]


def mfcc_mean(pcm: np.ndarray, rate: int = 16000, n_mels: int = 40, n_mfcc: int = 20) -> np.ndarray:
    """Mean over frames of 20 MFCCs (25 ms Hann window, 10 ms hop, 40 mel bands): ``(n_mfcc,)``."""
    from scipy.fft import dct
    from scipy.signal import stft

    from runtime.metrics import _mel_filterbank

    _, _, z = stft(pcm, fs=rate, window="hann", nperseg=400, noverlap=240, nfft=512, boundary=None)
    logmel = np.log(_mel_filterbank(rate, 512, n_mels) @ (np.abs(z) ** 2) + 1e-8)
    return dct(logmel, type=2, axis=0, norm="ortho")[:n_mfcc].mean(axis=1)


def bag(tokens: Sequence[Sequence[int]]) -> Counter:
    """Counts of (layer, token id) over all layers of a clip's codec tokens."""
    return Counter((l, int(t)) for l, layer in enumerate(tokens) for t in layer)


def cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na, nb = np.sqrt(sum(v * v for v in a.values())), np.sqrt(sum(v * v for v in b.values()))
    return float(dot / (na * nb)) if na and nb else 0.0


def nearest_label(query: Any, demos: Sequence[tuple[Any, str]], sim: Callable[[Any, Any], float]) -> str:
    """The label of the most similar demonstration (first one on ties)."""
    return max(((sim(query, f), -i, lab) for i, (f, lab) in enumerate(demos)))[2]


class Features:
    """Per clip, memoised: codec tokens (through the engine's codec) and mean MFCC of the same clip."""

    def __init__(self, codec: Any, seconds: float, crop: str) -> None:
        self.codec, self.seconds, self.crop = codec, seconds, crop
        self.pcm: dict[Path, np.ndarray] = {}
        self.tok: dict[Path, Any] = {}

    def clip(self, path: Path) -> np.ndarray:
        if path not in self.pcm:
            from runtime.audio import read_audio
            from runtime.tasks.common import fix_length

            self.pcm[path] = fix_length(read_audio(path, 16000), int(self.seconds * 16000), self.crop)
        return self.pcm[path]

    def tokens(self, path: Path) -> Any:
        if path not in self.tok:
            self.tok[path] = self.tokens_of(self.clip(path))
        return self.tok[path]

    def tokens_of(self, pcm: np.ndarray) -> list[list[int]]:
        """LLM token ids per codec layer of a clip ``(n,)``."""
        return [self.codec.code_to_token(l, c).tolist() for l, c in enumerate(self.codec.encode(pcm), start=1)]


def baseline_accuracy(eps: Sequence[Episode], feats: Features) -> dict[str, list[bool]]:
    """Per-episode correctness of the two nearest-demonstration baselines."""
    out: dict[str, list[bool]] = {"nearest demo: bag of codec tokens": [], "nearest demo: mean MFCC": []}
    for demos, (q, lab) in eps:
        bags = [(bag(feats.tokens(p)), l) for p, l in demos]
        out["nearest demo: bag of codec tokens"].append(nearest_label(bag(feats.tokens(q)), bags, cosine) == lab)
        mf = [(mfcc_mean(feats.clip(p)), l) for p, l in demos]
        dist = lambda a, b: -float(np.linalg.norm(a - b))  # noqa: E731
        out["nearest demo: mean MFCC"].append(nearest_label(mfcc_mean(feats.clip(q)), mf, dist) == lab)
    return out


def llm_accuracy(eps: Sequence[Episode], engine: Any, feats: Features, opts: Any,
                 silent_query: bool = False) -> list[bool]:
    """Per-episode correctness of the LLM; ``silent_query`` replaces the query clip by 1 s of
    silence, so the score measures the label prior alone (does the LLM use the query audio?)."""
    from runtime.prompt import AudioTokens, Demo
    from runtime.tasks.classify import classify_tokens

    def toks(p: Path) -> AudioTokens:
        return AudioTokens(*feats.tokens(p))

    silence = AudioTokens(*feats.tokens_of(np.zeros(int(feats.seconds * 16000), np.float32)))
    return [classify_tokens(engine, [Demo(toks(p), l) for p, l in demos], silence if silent_query else toks(q),
                            opts, "score").label == lab for demos, (q, lab) in eps]


def record(method: str, ways: int, shots: int, hits: Sequence[bool], **config: Any) -> dict[str, Any]:
    k, n = int(sum(hits)), len(hits)
    lo, hi = wilson(k, n)
    return {"method": method, "ways": ways, "shots": shots, "episodes": n, "accuracy": k / n if n else float("nan"),
            "ci95": [lo, hi], "chance": 1 / ways, **config}


def llm_grid(quick: bool) -> list[dict[str, Any]]:
    """The Table 2 axes: induction on/off, repeats 1/2, semantic vs all layers (quick: one point)."""
    if quick:
        return [{"induction": True, "repeats": 1, "layers": "semantic"}]
    return [{"induction": i, "repeats": r, "layers": l}
            for i, r, l in itertools.product((True, False), (1, 2), ("semantic", "all"))]


def run(a: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Result records (one per method and configuration) and {what: why not run}."""
    from runtime.defaults import DefaultsError, resolve
    from runtime.tasks import TaskOptions

    groups, missing = esc50_groups(a.data), {}
    try:
        model, codec, _ = resolve("classify", a.model, a.codec, None, need_demos=False)
    except DefaultsError as e:
        return [], {"classification": str(e)}
    engine = None
    if not a.no_llm:
        from runtime.tasks import open_engine

        engine = open_engine(model, codec, threads=a.threads)
    from runtime.codec import CodecSession

    feats = Features(engine.codec if engine else CodecSession(codec, threads=1), a.clip_seconds, "loudest")
    recs = []
    for ways, shots in itertools.product(a.ways, a.shots):
        eps = episodes(groups, ways, shots, a.episodes, a.seed + 1000 * ways + shots)
        for name, hits in baseline_accuracy(eps, feats).items():
            recs.append(record(name, ways, shots, hits))
            log(f"{ways}-way {shots}-shot {name}: {recs[-1]['accuracy']:.3f}")
        for cfg in (llm_grid(a.quick) if engine else []):
            opts = TaskOptions(shots=shots, repeats=cfg["repeats"], layers=cfg["layers"], induction=cfg["induction"],
                               clip_seconds=a.clip_seconds, crop="loudest").with_defaults("classify")
            recs.append(record("LLM", ways, shots, llm_accuracy(eps, engine, feats, opts), **cfg))
            log(f"{ways}-way {shots}-shot LLM {cfg}: {recs[-1]['accuracy']:.3f}")
            if cfg == llm_grid(True)[0]:
                hits = llm_accuracy(eps, engine, feats, opts, silent_query=True)
                recs.append(record("LLM, silent query (label prior)", ways, shots, hits, **cfg))
    if a.no_llm:
        missing["LLM"] = "--no-llm"
    return recs, missing


def markdown(recs: Sequence[dict[str, Any]], missing: dict[str, str]) -> str:
    lines = ["| N-way | K-shot | method | induction | repeats | layers | accuracy | 95 % CI | chance | episodes |",
             "|---:|---:|---|---|---:|---|---:|---|---:|---:|"]
    for r in recs:
        ind = "–" if "induction" not in r else ("on" if r["induction"] else "off")
        lines.append(f"| {r['ways']} | {r['shots']} | {r['method']} | {ind} | {r.get('repeats', '–')} | "
                     f"{r.get('layers', '–')} | {r['accuracy']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['chance']:.3f} | {r['episodes']} |")
    text = "\n".join(lines) + "\n"
    return text + "".join(f"\n- {k}: not run: {v}" for k, v in missing.items()) + ("\n" if missing else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--quick", action="store_true", help="2-way 1-shot, 8 episodes, one LLM configuration")
    p.add_argument("--ways", type=int, nargs="+", default=[2, 3, 5])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--clip-seconds", type=float, default=1.0)
    p.add_argument("--no-llm", action="store_true")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--codec", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/classify_baselines"))
    p.add_argument("--force", action="store_true")
    return p


def apply_quick(a: argparse.Namespace) -> argparse.Namespace:
    if a.quick:
        a.ways, a.shots, a.episodes = [2], [1], min(a.episodes, 8)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import environment, write_jsonl
    from runtime.cli import fatal

    a = apply_quick(build_parser().parse_args(argv))
    jsonl, md = a.out / "classify_baselines.jsonl", a.out / "classify_baselines.md"
    if not a.force and (existing := [str(p) for p in (jsonl, md) if p.exists()]):
        return fatal(f"{', '.join(existing)} exist; pass --force to overwrite")
    a.out.mkdir(parents=True, exist_ok=True)
    recs, missing = run(a, lambda s: print(s, file=sys.stderr))
    env = environment(packages=["llama-cpp-python", "onnxruntime"])
    write_jsonl(jsonl, recs + [{"env": env, "missing": missing}])
    text = markdown(recs, missing)
    md.write_text(f"# Few-shot classification vs baselines (ESC-50)\n\ngit {env['git_sha']}, {env['cpu']}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_cli

    sys.exit(run_cli(main))
