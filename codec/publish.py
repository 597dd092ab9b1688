"""``python -m codec.publish RUN_DIR OUT_DIR``: a weights-only copy of a training checkpoint.

What the repository ships in ``models/default/checkpoint/``: config.json, vocab.json (with the
per-layer token tables and the GGUF's sha256) and model.safetensors without the frozen codebook rows,
which ``load_checkpoint(..., llm=GGUF)`` / ``export.onnx --llm GGUF`` rebuild from the LLM. Weight norm
stays unfolded, so a later training run can warm-start from it (``codec.train --init``), and the run's
discriminator and consistency-head weights go to ``train_aux.safetensors`` beside them. Optimiser state is
not copied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from codec.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from codec.training.warm import save_aux


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m codec.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="training checkpoint (with codebooks)")
    p.add_argument("out_dir", type=Path, help="weights-only checkpoint to write")
    p.add_argument("--llm", type=Path, default=None, help="GGUF, if run_dir is itself weights-only")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint in out_dir")
    args = p.parse_args(argv)
    try:
        model, info = load_checkpoint(args.run_dir, llm=args.llm)
        save_checkpoint(args.out_dir, model, info, overwrite=args.force, codebooks=False)
        save_aux(args.run_dir, args.out_dir)  # the critic's weights, for later warm starts
    except (CheckpointError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out_dir.iterdir()) / 1e6
    print(f"wrote {args.out_dir} ({size:.1f} MB, weights only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
