"""Write a codec checkpoint with seeded random weights and codebooks at real sizes, for speed runs.

    python -m benchmarks.make_random_codec --preset small --out runs/small_random [--llm-dim 256]

Speed does not depend on the weights, and the exported graphs hold no codebooks (only the projected
``(N, latent)`` tables in codebooks.npz), so ``--llm-dim`` below 4096 changes nothing measured while
keeping the checkpoint small. W = 3000 words, V = 32000 tokens as in the paper.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.make_random_codec", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="small", help="codec preset (paper, small, tiny)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--llm-dim", type=int, default=256, help="width of the random 'LLM' embeddings")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--word-table-size", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    args = p.parse_args(argv)

    import torch

    from codec.checkpoint import save_checkpoint
    from codec.config import preset
    from codec.model import LLMCodec

    cfg = preset(args.preset, llm_dim=args.llm_dim, vocab_size=args.vocab_size,
                 word_table_size=args.word_table_size)
    g = torch.Generator().manual_seed(args.seed)
    vocab = torch.randn(cfg.vocab_size, cfg.llm_dim, generator=g)
    words = sorted(torch.randperm(cfg.vocab_size - 3, generator=g)[: cfg.word_table_size].add(3).tolist())
    fingerprint = "sha256:" + hashlib.sha256(f"random-{args.seed}-{cfg.vocab_size}".encode()).hexdigest()
    info = {"gguf": None, "gguf_sha256": None, "fingerprint": fingerprint, "word_token_ids": words,
            "bos_id": 1, "eos_id": 2, "note": "random benchmark codebooks, not an LLM vocabulary"}
    torch.manual_seed(args.seed)
    model = LLMCodec(cfg, vocab[words], vocab).eval()
    try:
        save_checkpoint(args.out, model, info, overwrite=args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = model.parameter_counts()
    print(f"wrote {args.out}: preset {cfg.preset}, encoder {counts['encoder'] / 1e6:.2f} M, "
          f"decoder {counts['decoder'] / 1e6:.2f} M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
