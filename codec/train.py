"""Train the causal LLM-Codec with a frozen LLM's token embeddings as codebooks.

    python -m codec.train --preset small --data DIR [DIR...] --llm model.gguf --out runs/x --steps 10000
    torchrun --nproc_per_node 8 -m codec.train ...      # DDP: same flags, no code changes

Reads the vocabulary and ``token_embd.weight`` from the GGUF, builds the layer-1 word table, fills
``llm_dim``/``vocab_size``/``word_table_size`` in the config, and trains encoder, decoder and
``cb_proj`` (codebooks frozen) on reconstruction (MR-STFT + mel), VQ (+ codebook-usage entropy against
collapse, ``--entropy-tau``), semantic (layer 1, clip text), consistency (layer 2, ``--teacher``) and
least-squares GAN + feature-matching losses. ``--out`` receives the checkpoint (config.json,
model.safetensors, vocab.json), ``train_state.pt`` (for ``--resume``), ``metrics.csv`` (one row per
``--log-every`` steps) and ``eval.csv`` (fixed batch). Ctrl-C finishes the current step, saves a checkpoint
(``--resume`` continues from it) and exits 130; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path
from typing import Any, Sequence

from runtime.cli import die, run_cli

if __name__ == "__main__":  # torch takes seconds to load: a Ctrl-C meanwhile exits 130 with one line too
    from runtime.cli import quiet_interrupt_while_importing

    quiet_interrupt_while_importing()

import torch  # noqa: E402

from codec.checkpoint import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE
from codec.config import PRESETS, CodecConfig, preset
from codec.data import AudioDataset, ShardedEpochSampler, collate, make_loader
from codec.discriminator import DISCRIMINATOR_KINDS, discriminator_for
from codec.model import LLMCodec
from codec.teacher import TEACHERS, get_teacher
from codec.training.objective import GeneratorObjective, LossWeights, TextTargets
from codec.training.loop import EVAL_FILE, run_loop
from codec.training.state import METRICS_FILE, TRAIN_STATE_FILE, cleanup_distributed, init_distributed
from codec.training.trainer import OptimConfig, Trainer
from codec.training.warm import warm_start
from codec.vocab import VocabError, build_residual_table, build_word_table, load_vocab, make_vocab_info

OUTPUT_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, TRAIN_STATE_FILE, METRICS_FILE, EVAL_FILE)


FREEZABLE = ("encoder", "quantizer", "decoder")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m codec.train", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--data", nargs="+", required=True, type=Path, help="folders, audio files or list files")
    ap.add_argument("--eval-data", nargs="+", type=Path, default=None,
                    help="held-out audio for eval.csv (default: a fixed batch of --data)")
    ap.add_argument("--llm", required=True, type=Path, help="LLaMA-family GGUF with token_embd.weight")
    ap.add_argument("--out", required=True, type=Path, help="output/checkpoint directory")
    ap.add_argument("--steps", type=int, required=True, help="total optimisation steps")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="end this run after N steps (checkpointed; --resume continues the same schedule)")
    ap.add_argument("--time-limit", type=float, default=None, help="end this run after M minutes (checkpointed)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    ap.add_argument("--force", action="store_true", help="start over in a non-empty --out")
    ap.add_argument("--batch-size", type=int, default=8, help="per process")
    ap.add_argument("--segment-seconds", type=float, default=1.0, help="rounded up to whole code groups")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--schedule", choices=("cosine", "exp", "constant"), default="cosine")
    ap.add_argument("--final-lr-ratio", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher", choices=sorted(TEACHERS), default="mfcc", help="consistency-loss teacher")
    ap.add_argument("--no-adversarial", action="store_true", help="train without the discriminator")
    ap.add_argument("--disc", choices=DISCRIMINATOR_KINDS, default="msstft",
                    help="discriminator: multi-scale STFT, multi-period (HiFi-GAN) or both; a warm start from an "
                         "MS-STFT run keeps that part and starts the multi-period part fresh")
    ap.add_argument("--adv-start", type=int, default=0, help="first step using the discriminator")
    ap.add_argument("--disc-every", type=int, default=1,
                    help="update the discriminator (and use the adversarial/feature losses) every N-th step only: "
                         "N=2 trained 1.16x the audio-seconds per second of N=1 on a 2-core CPU "
                         "(benchmarks/results/train_throughput_small_gemma.md)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast of the convolutions (AMX/tensor cores); the cosine search, the losses and "
                         "the reconstructed audio stay float32. Measured on 1 CPU thread, warm-started from the "
                         "default codec: 1.27x the steps in 12 min and no held-out loss "
                         "(benchmarks/results/train_ab/ab_bf16_cpu.md)")
    ap.add_argument("--init", type=Path, default=None,
                    help="warm start: codec weights from this checkpoint (a run dir or the weights-only "
                         "models/default/checkpoint; its discriminator too when it holds train_state.pt); "
                         "fresh optimiser and LR schedule")
    ap.add_argument("--f0-teacher", type=float, default=0.5, metavar="P",
                    help="decoder_head=harmonic: on this share of steps the oscillators play the input's YIN F0 "
                         "instead of the predicted one (teacher forcing; the F0 predictor learns from the f0 loss)")
    ap.add_argument("--entropy-every", type=int, default=1, metavar="N",
                    help="compute the codebook-usage entropy term on every N-th step only, weighted xN there (the "
                         "same mean weight); its soft assignment was about a quarter of each step on a 2-core CPU")
    ap.add_argument("--vq-gain-every", type=int, default=0, metavar="N",
                    help="every N steps (from the first), rescale each VQ layer's projected codebook to the "
                         "least-squares gain on the batch (MultiScaleRVQ.match_gains); 0: never. The search is "
                         "by direction only, and the default codec's rows had drifted 3-5x too short")
    ap.add_argument("--freeze", nargs="+", default=[], choices=FREEZABLE, metavar="PART",
                    help=f"keep these codec parts fixed ({', '.join(FREEZABLE)}): e.g. a new --override "
                         "decoder_head=istft trained over the warm-started encoder and quantizer, whose codes "
                         "(the LLM's tokens) then stay exactly those of the --init checkpoint")
    ap.add_argument("--loss-weight", action="append", default=[], metavar="NAME=VALUE",
                    help=f"override a loss weight ({', '.join(f.name for f in dataclasses.fields(LossWeights))})")
    ap.add_argument("--entropy-tau", type=float, default=0.05,
                    help="temperature of the codebook-usage entropy's soft assignment softmax(cos / tau) "
                         "(weight: --loss-weight entropy=W, default 5; entropy=0 turns the term off)")
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=0, help="0: only before and after training")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--balanced", action="store_true", help="draw each --data source equally often")
    ap.add_argument("--word-table-size", type=int, default=3000)
    ap.add_argument("--residual-table-size", type=int, default=32000,
                    help="layer-2+ codebook entries: the whole vocabulary if it is no larger, else this many "
                         "normal pieces by SentencePiece score (codec.vocab.build_residual_table)")
    ap.add_argument("--word-list", default="default",
                    help="English word list for the layer-1 whole-word check ('default': /usr/share/dict/words; "
                         "'none': no check)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is far faster on a CPU shared with other jobs: no OpenMP spinning)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="CodecConfig field override (tuples comma-separated), e.g. latent_dim=96")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return ap


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["latent_dim=96", "encoder_rates=3,4,5,8", "depthwise=false"]`` -> typed CodecConfig fields."""
    types = {f.name: str(f.type) for f in dataclasses.fields(CodecConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"bad --override {item!r}; use KEY=VALUE with KEY a CodecConfig field: {sorted(types)}")
        kind = types[key]
        if kind.startswith("tuple"):
            out[key] = tuple(int(v) for v in raw.split(",") if v.strip())
        elif kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--override {key} expects true/false, got {raw!r}")
            out[key] = raw.lower() in ("true", "1")
        elif kind == "int":
            out[key] = int(raw)
        elif kind == "float":
            out[key] = float(raw)
        else:
            out[key] = raw
    return out


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    if resume:
        if not (out / TRAIN_STATE_FILE).is_file():
            die(f"--resume: no {TRAIN_STATE_FILE} in {out}")
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            die(f"{out} is not empty; pass --resume to continue training or --force to start over")
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def build_config(args: argparse.Namespace, vocab_dim: int, vocab_size: int) -> CodecConfig:
    overrides = parse_overrides(args.override)
    overrides.update(llm_dim=vocab_dim, vocab_size=vocab_size, word_table_size=args.word_table_size)
    return preset(args.preset, **overrides)


def segment_samples(cfg: CodecConfig, seconds: float) -> int:
    """``seconds`` rounded up to whole code groups (4 frames x hop), so no padding reaches the loss."""
    group = cfg.group_frames * cfg.hop
    return max(1, -(-round(seconds * cfg.sample_rate) // group)) * group


def fixed_batch(sources: Sequence[Path], segment: int, batch: int, seed: int) -> torch.Tensor:
    """A deterministic evaluation batch ``(B, 1, segment)``: evenly spaced clips, fixed crops."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = AudioDataset(sources, segment, seed=seed + 12345, with_text=False)
    idx = torch.linspace(0, len(ds) - 1, min(batch, len(ds))).round().long().tolist()
    return collate([ds[i] for i in idx])[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps <= 0 or args.batch_size <= 0:
        die("--steps and --batch-size must be positive")
    if args.entropy_every < 1:
        die("--entropy-every must be >= 1")
    if args.entropy_tau <= 0:
        die("--entropy-tau must be positive")
    if args.disc_every < 1:
        die("--disc-every must be >= 1")
    if args.init is not None and args.resume:
        die("--init starts a new run from given weights; --resume continues the run in --out: pass one of them")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        info, device = init_distributed(args.device)
    except RuntimeError as e:
        die(str(e))
    try:
        return _train(args, info, device)
    finally:
        cleanup_distributed(info)
        torch.set_num_threads(threads)  # main() may run inside a larger process (tests)


def _train(args: argparse.Namespace, info, device: torch.device) -> int:
    if info.is_main:
        prepare_out(args.out, args.resume, args.force)
    try:
        vocab = load_vocab(args.llm)
    except (FileNotFoundError, VocabError) as e:
        die(str(e))
    if vocab.embeddings is None:
        die(f"{args.llm} is a vocab-only GGUF (no token_embd.weight); the codec needs the LLM's token "
              "embeddings: pass a full model GGUF (e.g. one built with `python -m scripts.tiny_llm`)")
    try:
        word_ids = build_word_table(vocab, args.word_table_size,
                                    None if args.word_list == "none" else args.word_list)
        residual_ids = build_residual_table(vocab, args.residual_table_size)
        cfg = build_config(args, vocab.dim, len(residual_ids))
    except (VocabError, ValueError, KeyError) as e:
        die(str(e))
    torch.manual_seed(args.seed + info.rank)
    segment = segment_samples(cfg, args.segment_seconds)
    try:
        dataset = AudioDataset(args.data, segment, cfg.sample_rate, seed=args.seed)
        eval_wav = fixed_batch(args.eval_data or args.data, segment, args.batch_size, args.seed).to(device)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    sampler = ShardedEpochSampler([c.source for c in dataset.clips], args.seed, info.rank, info.world_size,
                                  balanced=args.balanced, min_per_rank=args.batch_size)
    loader = make_loader(dataset, args.batch_size, sampler, args.num_workers)
    codec = LLMCodec(cfg, vocab.embeddings[word_ids], vocab.embeddings[residual_ids])
    weights = LossWeights().update(args.loss_weight)
    codec.quantizer.entropy_tau = args.entropy_tau if weights.entropy > 0 else None
    teacher = get_teacher(args.teacher, cfg.sample_rate) if weights.consistency > 0 else None
    objective = GeneratorObjective(cfg.latent_dim, cfg.sample_rate, weights, teacher,
                                   TextTargets(vocab) if weights.semantic > 0 else None)
    disc = None if args.no_adversarial else discriminator_for(cfg.preset, args.disc)
    opt = OptimConfig(lr=args.lr, warmup=args.warmup, schedule=args.schedule, final_lr_ratio=args.final_lr_ratio,
                      grad_clip=args.grad_clip, adv_start=args.adv_start, disc_every=args.disc_every,
                      bf16=args.bf16, gain_every=args.vq_gain_every,
                      f0_teacher=args.f0_teacher, entropy_every=args.entropy_every)
    vocab_info = make_vocab_info(vocab, word_ids, residual_ids)
    if args.init is not None:
        try:
            warm_start(args.init, args.llm, codec, vocab_info, disc, objective.head, objective.pitch_head)
        except (FileNotFoundError, ValueError) as e:
            die(str(e))
    if args.vq_gain_every and ("quantizer" in args.freeze or info.world_size > 1):
        die("--vq-gain-every rescales the quantizer in place: not with --freeze quantizer, and not under DDP "
            "(each process would rescale on its own batch)")
    for part in args.freeze:
        getattr(codec, part).requires_grad_(False)
    trainer = Trainer(codec, objective, disc, opt, args.steps, info, device)
    return run_loop(args, trainer, dataset, sampler, loader, eval_wav, vocab_info, info, device)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
