"""How well each VQ layer codes its residual, before and after a closed-form gain refit (issue 9).

    python -m benchmarks.vq_gain --checkpoint models/default/checkpoint --llm models/default/llm.gguf \
        --data runs/splits/heldout_vcc2018.txt runs/splits/heldout_librispeech_train.txt [--clips 16] [--json-out F]

For ``--clips`` held-out clips (2 s each, spread over the ``--data`` lists), per layer: the residual left
after it as a fraction of the latent's norm, the mean cosine between the pooled residual and the chosen row,
the chosen rows' length over the residual's, and the least-squares gain ``<q, x> / <q, q>`` (1 when the rows
have the right length). Then the same after ``MultiScaleRVQ.match_gains`` on the same latents: what a
refit alone buys before any retraining.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from runtime.cli import die


def layer_stats(quantizer: Any, z: torch.Tensor) -> list[dict[str, float]]:
    """Per layer of ``quantizer`` on latents ``z (B, latent, T)``: residual fraction, cosine, length ratio, gain."""
    from codec.quantizer import nearest

    out, residual, norm = [], z, float(z.norm())
    for layer, (stride, (rows, normed)) in enumerate(zip(quantizer.strides, quantizer.projected_tables())):
        x = F.avg_pool1d(residual, stride, stride) if stride > 1 else residual
        q = rows[nearest(x.transpose(1, 2), normed)].transpose(1, 2)
        held = q.repeat_interleave(stride, dim=-1) if stride > 1 else q
        residual = residual - held
        out.append({"layer": layer + 1, "residual_fraction": float(residual.norm()) / norm,
                    "cosine": float(F.cosine_similarity(x, q, dim=1).mean()),
                    "length_ratio": float(q.norm(dim=1).mean() / x.norm(dim=1).mean()),
                    "ls_gain": float((q * x).sum() / (q * q).sum())})
    return out


def load_clips(lists: Sequence[Path], clips: int, seconds: float = 2.0) -> torch.Tensor:
    """``(clips, 1, seconds·16000)``: the first ``seconds`` of clips taken in turn from each list, loudness-
    normalised as in training."""
    from codec.data import find_audio_files, normalize_loudness
    from runtime.audio import read_audio

    found = find_audio_files(lists)
    per_list = [[p for p, k in found if k == i] for i in range(len(lists))]
    need, picked = int(seconds * 16000), []
    for i in range(max(len(p) for p in per_list)):
        for paths in per_list:
            if i < len(paths) and len(picked) < clips:
                pcm = read_audio(paths[i], 16000)
                if len(pcm) >= need:
                    picked.append(torch.from_numpy(normalize_loudness(pcm[:need]).astype("float32")))
    if not picked:
        raise ValueError(f"no clip of at least {seconds} s in {[str(p) for p in lists]}")
    return torch.stack(picked)[:, None]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vq_gain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--llm", type=Path, required=True, help="the GGUF the checkpoint was trained against")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="held-out list files")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--json-out", type=Path, default=None)
    a = ap.parse_args(argv)
    from codec.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    try:
        model, _ = load_checkpoint(a.checkpoint, llm=a.llm)
        wav = load_clips(a.data, a.clips)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    with torch.no_grad():
        z = model.eval().encoder(wav)
        z = z[..., : z.shape[-1] // model.cfg.group_frames * model.cfg.group_frames]
        before = layer_stats(model.quantizer, z)
        factors = model.quantizer.match_gains(z)
        after = layer_stats(model.quantizer, z)
    lines = [f"{a.checkpoint}, {wav.shape[0]} held-out clips x 2 s", "",
             "| layer | residual left, before | after refit | cosine | row length / residual | LS gain | refit factor |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {b['layer']} | {b['residual_fraction']:.3f} | {c['residual_fraction']:.3f} | {b['cosine']:.3f} | "
              f"{b['length_ratio']:.3f} | {b['ls_gain']:.2f} | {f:.2f} |" for b, c, f in zip(before, after, factors)]
    print("\n".join(lines))
    if a.json_out is not None:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({"checkpoint": str(a.checkpoint), "clips": wav.shape[0], "before": before,
                                          "after": after, "factors": factors}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
