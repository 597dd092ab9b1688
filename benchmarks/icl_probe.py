"""``python -m benchmarks.icl_probe``: does an LLM match demonstrations in context? (no audio, no codec)

    python -m benchmarks.icl_probe [--model A.gguf B.gguf] [--ways 2] [--shots 1] [--episodes 40]
                                   [--rates 0 0.3 0.6 0.85] [--out DIR]

A synthetic few-shot episode in UniAudio 1.5's prompt layout: each of ``ways`` classes has a random
prototype of ``--length`` "audio" tokens drawn from the LLM's residual codebook table (the ids layers
2-3 of a codec built for it use); every demonstration and the query are noisy copies of their class's
prototype with a fraction ``rate`` of positions replaced by random tokens; labels are ordinary
English words. The LLM scores every label after the query (``FrozenLM.label_logprobs``) and the best
one is its answer. A model that copies from context scores far above chance at low rates and falls to
chance as the rate approaches 1; a random-weight model stays at chance everywhere. Accuracies carry
Wilson 95 % intervals; every model sees the same episodes (same seed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

import numpy as np  # noqa: E402

from benchmarks.fewshot import wilson  # noqa: E402
from runtime.cli import fatal, run_cli  # noqa: E402

LABELS = ("apple", "river", "stone", "music", "garden", "window", "yellow", "forest", "silver", "ocean")


def token_pool(model: Path) -> np.ndarray:
    """The LLM's residual codebook table (``codec.vocab.build_residual_table``): the probe's "audio" ids."""
    from codec.vocab import build_residual_table, load_vocab

    vocab = load_vocab(model, load_embeddings=False)
    pool = build_residual_table(vocab)
    keep = vocab.token_types[pool] == 1  # LLaMA-2 keeps all 32,000 ids in its table: skip control/byte ids
    return pool[keep]


def noisy(proto: np.ndarray, rate: float, pool: np.ndarray, rng: np.random.Generator) -> list[int]:
    """``proto`` with ``round(rate * len)`` random positions replaced by random pool tokens."""
    out = proto.copy()
    n = int(round(rate * len(proto)))
    pos = rng.choice(len(proto), n, replace=False)
    out[pos] = rng.choice(pool, n)
    return out.tolist()


def episode(rng: np.random.Generator, pool: np.ndarray, ways: int, shots: int, length: int, rate: float):
    """``(demos [(tokens, label)], query tokens, true label index, labels)`` of one episode."""
    labels = [LABELS[i] for i in rng.choice(len(LABELS), ways, replace=False)]
    protos = [rng.choice(pool, length) for _ in range(ways)]
    demos = [(noisy(protos[c], rate, pool, rng), labels[c]) for c in range(ways) for _ in range(shots)]
    demos = [demos[i] for i in rng.permutation(len(demos))]
    truth = int(rng.integers(ways))
    return demos, noisy(protos[truth], rate, pool, rng), truth, labels


def run_model(model: Path, a: argparse.Namespace) -> list[dict]:
    from runtime.lm import FrozenLM
    from runtime.prompt import AudioTokens, Demo, build_episode_prompt

    pool = token_pool(model)
    lm = FrozenLM(model, n_ctx=a.n_ctx, n_threads=a.threads, seed=a.seed)
    rows = []
    for rate in a.rates:
        rng = np.random.default_rng(a.seed)  # the same episodes for every model
        correct, t0 = 0, time.perf_counter()
        for _ in range(a.episodes):
            demos, query, truth, labels = episode(rng, pool, a.ways, a.shots, a.length, rate)
            prompt = build_episode_prompt(lm.tokenize_text, [Demo(AudioTokens(d), lab) for d, lab in demos],
                                          AudioTokens(query), bos_id=lm.bos_id, layers="semantic",
                                          n_ctx=lm.n_ctx, reserve=8)
            scores = lm.label_logprobs(prompt.ids, [lm.tokenize_text(lab) for lab in labels])
            correct += int(np.argmax(scores) == truth)
        lo, hi = wilson(correct, a.episodes)
        rows.append({"model": model.name, "rate": rate, "ways": a.ways, "shots": a.shots, "length": a.length,
                     "episodes": a.episodes, "accuracy": correct / a.episodes, "ci95": [round(lo, 4), round(hi, 4)],
                     "chance": 1.0 / a.ways, "seconds": round(time.perf_counter() - t0, 2)})
        print(f"{model.name}: rate {rate:.2f} accuracy {correct}/{a.episodes} = {correct / a.episodes:.3f} "
              f"[{lo:.3f}, {hi:.3f}] (chance {1 / a.ways:.3f})", flush=True)
    return rows


def markdown(rows: Sequence[dict], models: Sequence[Path], a: argparse.Namespace) -> str:
    rates = sorted({r["rate"] for r in rows})
    head = "| replaced | " + " | ".join(m.name for m in models) + " |\n|---|" + "---|" * len(models) + "\n"
    body = ""
    for rate in rates:
        cells = [next(f"{r['accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" for r in rows
                      if r["rate"] == rate and r["model"] == m.name) for m in models]
        body += f"| {rate:.0%} | " + " | ".join(cells) + " |\n"
    return (f"# In-context matching probe: {a.ways}-way {a.shots}-shot, {a.length}-token sequences, "
            f"{a.episodes} episodes per cell (chance {1 / a.ways:.2f}; Wilson 95 % intervals)\n\n" + head + body)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.icl_probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, nargs="+", default=None, help="GGUF(s); default: models/default/llm.gguf")
    p.add_argument("--ways", type=int, default=2)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--length", type=int, default=24, help="tokens per synthetic audio sequence")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.85], help="fraction of tokens replaced")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--out", type=Path, default=None, help="write icl_probe.jsonl and icl_probe.md here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.ways < 2 or a.ways > len(LABELS) or a.shots < 1 or a.episodes < 1 or a.length < 1:
        return fatal(f"need 2 <= --ways <= {len(LABELS)}, --shots >= 1, --episodes >= 1, --length >= 1")
    if any(not 0.0 <= r <= 1.0 for r in a.rates):
        return fatal("--rates are fractions in [0, 1]")
    from codec.vocab import VocabError
    from runtime.defaults import DefaultsError, default_llm
    from runtime.lm import ContextOverflowError, ModelLoadError

    try:
        models = a.model or [default_llm()]
        rows = [r for m in models for r in run_model(m, a)]
    except (DefaultsError, ModelLoadError, VocabError, ContextOverflowError, FileNotFoundError) as e:
        return fatal(str(e))
    md = markdown(rows, models, a)
    print(md)
    if a.out is not None:
        from benchmarks.common import environment, write_jsonl

        a.out.mkdir(parents=True, exist_ok=True)
        env = environment(packages=["llama-cpp-python"])
        write_jsonl(a.out / "icl_probe.jsonl", [{**r, "env": env} for r in rows])
        (a.out / "icl_probe.md").write_text(md + f"\nMachine: {env.get('cpu')}; git {env.get('git_sha')}; command: "
                                            f"`python -m benchmarks.icl_probe {' '.join(sys.argv[1:])}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
