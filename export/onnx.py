"""``python -m export.onnx CHECKPOINT_DIR --out BUNDLE_DIR``: export a codec checkpoint to a bundle.

Writes the encoder/decoder step graphs for each chunk size (state as explicit I/O), offline graphs
with a dynamic time axis, ``codebooks.npz``, torch golden pairs and ``manifest.json`` (facts also
copied into each graph's metadata_props), then verifies the bundle in onnxruntime against the golden
pairs and exits non-zero on a mismatch. The bundle is assembled in ``BUNDLE_DIR.partial`` and only
renamed into place once verified, so a failed export never leaves a bundle that looks valid.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.cli import fatal, reraise_interrupt, run_cli

DEFAULT_CHUNK_FRAMES = (4, 8)


class ExportError(RuntimeError):
    """The export could not be written or did not verify."""


def check_chunk_frames(chunk_frames: list[int] | tuple[int, ...], group_frames: int) -> list[int]:
    """Sorted unique chunk sizes; the group size is always included (the runtime's remainder graph)."""
    sizes = sorted({int(k) for k in chunk_frames} | {group_frames})
    if sizes[0] < 1:
        raise ExportError(f"chunk sizes must be >= 1 frame, got {sorted(chunk_frames)}")
    return sizes


def codebook_arrays(model: Any, vocab_info: dict[str, Any]) -> dict[str, np.ndarray]:
    """``codebooks.npz`` contents: per layer ``layer{l}_rows_f32`` (N_l, latent) unnormalised projected rows,
    ``layer{l}_normed_f32`` / ``_f16`` their L2-normalised rows, ``layer{l}_token_ids`` (N_l,) int64 the LLM
    token of each code, and ``word_token_ids`` (W,) int64 (= ``layer1_token_ids``, kept for older readers)."""
    from codec.checkpoint import layer_token_ids

    arrays: dict[str, np.ndarray] = {}
    for l, (rows, normed) in enumerate(model.quantizer.projected_tables(), start=1):
        arrays[f"layer{l}_rows_f32"] = rows.numpy().astype(np.float32)
        arrays[f"layer{l}_normed_f32"] = normed.numpy().astype(np.float32)
        arrays[f"layer{l}_normed_f16"] = normed.numpy().astype(np.float16)
    for l, ids in enumerate(layer_token_ids(vocab_info, model.cfg), start=1):
        arrays[f"layer{l}_token_ids"] = np.asarray(ids, dtype=np.int64)
    arrays["word_token_ids"] = np.asarray(vocab_info["word_token_ids"], dtype=np.int64)
    return arrays


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite without ``force``, and never replace a directory that is not a bundle."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise ExportError(f"{out_dir} exists and is not empty (pass --force to replace it)")
        if not (out_dir / "manifest.json").is_file():
            raise ExportError(f"{out_dir} is not a codec bundle (no manifest.json); refusing to replace it")


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """``check_out_dir``, then an empty staging directory ``out_dir.partial``."""
    check_out_dir(out_dir, force)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _write_bundle(model: Any, cfg: Any, vocab_info: dict[str, Any], sizes: list[int], staging: Path,
                  log: Callable[[str], None]) -> tuple[dict[str, Any], Any]:
    """Write every bundle file into ``staging`` and verify it; returns ``(manifest, verification report)``."""
    from export import graphs as G
    from export.golden import write_golden
    from export.manifest import build_manifest, finalize, metadata
    from export.verify import verify_bundle

    graphs: dict[str, dict] = {}
    for part, module in (("encoder", model.encoder), ("decoder", model.decoder)):
        for k in sizes:
            log(f"exporting {part}_step_c{k}")
            graphs[f"{part}_step_c{k}"] = G.export_step(module, part, cfg, k, staging / f"{part}_step_c{k}.onnx")
        log(f"exporting {part}_offline")
        graphs[f"{part}_offline"] = G.export_offline(module, part, cfg, staging / f"{part}_offline.onnx")
    arrays = codebook_arrays(model, vocab_info)
    np.savez(staging / "codebooks.npz", **arrays)
    log("writing golden pairs")
    golden = write_golden(model, cfg, graphs, sizes, staging / "golden")
    state = {"encoder": G.state_specs(model.encoder), "decoder": G.state_specs(model.decoder)}
    manifest = build_manifest(cfg, vocab_info, sizes, state, graphs, golden, sorted(arrays))
    for name, graph in graphs.items():
        G.add_metadata(staging / graph["file"], metadata(manifest, name))
    finalize(staging, manifest)
    log("verifying in onnxruntime against the torch golden pairs")
    report = verify_bundle(staging, log)
    manifest["verification"] = report.summary()
    finalize(staging, manifest)
    return manifest, report


def export_bundle(checkpoint: Path, out_dir: Path, chunk_frames: list[int] | tuple[int, ...] = DEFAULT_CHUNK_FRAMES,
                  force: bool = False, log: Callable[[str], None] = print, llm: Path | None = None) -> dict[str, Any]:
    """Export, verify, and move the bundle into place; returns the manifest. Raises ``ExportError``.

    ``llm``: the GGUF that rebuilds a weights-only checkpoint's codebooks."""
    from codec.checkpoint import load_checkpoint

    check_out_dir(out_dir, force)
    model, vocab_info = load_checkpoint(checkpoint, llm=llm)
    model.fold_weight_norm()
    model.eval()
    cfg = model.cfg
    sizes = check_chunk_frames(chunk_frames, cfg.group_frames)
    staging = prepare_out_dir(out_dir, force)
    try:
        manifest, report = _write_bundle(model, cfg, vocab_info, sizes, staging, log)
    except KeyboardInterrupt:  # Ctrl-C: nothing half-written stays behind (a failed verify keeps it to inspect)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not report.ok:
        raise ExportError(f"onnxruntime does not match torch on the golden pairs (bundle left in {staging}): "
                          + "; ".join(report.summary()["failed"][:3] or [str(report.codes)]))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, vocab.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--chunk-frames", type=int, nargs="+", default=list(DEFAULT_CHUNK_FRAMES),
                   help="fixed-chunk step graph sizes in latent frames (the 4-frame group is always added)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--llm", type=Path, default=None,
                   help="LLM GGUF for a weights-only checkpoint's codebooks (e.g. models/default/llm.gguf)")
    args = p.parse_args(argv)
    try:
        from codec.checkpoint import CheckpointError
    except ImportError as e:
        reraise_interrupt(e)
        return fatal(f"export needs the training install (torch, onnx, safetensors): {e}")
    try:
        manifest = export_bundle(args.checkpoint, args.out, args.chunk_frames, args.force, llm=args.llm)
    except (ExportError, CheckpointError, FileNotFoundError, FileExistsError) as e:
        return fatal(str(e))
    print(f"wrote {args.out}: {len(manifest['graphs'])} graphs, chunk sizes {manifest['chunk_frames']}, "
          f"min SNR {manifest['verification']['min_snr_db']} dB vs torch")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
