"""The bundle manifest (``manifest.json``, format_version 2) and the ONNX metadata that mirrors it.

Schema (every key is written by ``build_manifest``; ``runtime.bundle.Bundle`` reads it)::

    format_version  2 (1: no layer{l}_token_ids in codebooks.npz; layers 2+ were code = id)
    created_by      "export.onnx"; git_sha: the exporting tree's commit (+"-dirty")
    codec           sample_rate, hop, frame_rate, vq_strides, group_frames, latent_dim,
                    codebook_sizes, tokens_per_second, preset, config (the full CodecConfig)
    latency_ms      conv (one hop), group (the layer-1 group), algorithmic (their sum)
    chunk_frames    fixed-chunk step graph sizes, e.g. [4, 8]
    state           encoder / decoder: [{name: "state_in.<layer>.<name>", shape, dtype}], init "zeros"
    graphs          name -> {file, kind, chunk_frames, inputs: [{name, shape, dtype}], outputs: [...]}
    codebooks       file, arrays, word_table_size, vocab_size (the residual table's)
    vocab           fingerprint, size (the LLM's), gguf, gguf_sha256, bos_id, eos_id, word_table_size,
                    residual_table_size
    golden          name -> file; verification: the export's own ORT check results
    files           relative path -> "sha256:<hex>" for every file except manifest.json
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from runtime.bundle import FORMAT_VERSION, MANIFEST, sha256_file

# The subset of the manifest copied into every ONNX graph's metadata_props (values JSON-encoded),
# so a single .onnx file still says what it is (sherpa-onnx style).
METADATA_KEYS = ("format_version", "codec", "latency_ms", "chunk_frames", "state", "vocab", "git_sha")


def git_sha(repo: Path | None = None) -> str:
    """The commit of the exporting tree, with ``-dirty`` for uncommitted changes; ``unknown`` outside git."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def codec_facts(cfg: Any) -> dict[str, Any]:
    """The ``codec`` section from a ``CodecConfig``."""
    return {"sample_rate": cfg.sample_rate, "hop": cfg.hop, "frame_rate": cfg.frame_rate,
            "vq_strides": list(cfg.vq_strides), "group_frames": cfg.group_frames,
            "latent_dim": cfg.latent_dim, "codebook_sizes": list(cfg.codebook_sizes),
            "tokens_per_second": cfg.tokens_per_second, "preset": cfg.preset, "config": cfg.to_dict()}


def latency_ms(cfg: Any) -> dict[str, float]:
    """Algorithmic latency: one hop for the causal conv stack plus the layer-1 group (design.md)."""
    hop_ms = 1000.0 * cfg.hop / cfg.sample_rate
    return {"conv": hop_ms, "group": hop_ms * cfg.group_frames, "algorithmic": hop_ms * (1 + cfg.group_frames)}


def vocab_facts(vocab_info: dict[str, Any], residual_size: int, word_table_size: int) -> dict[str, Any]:
    """The ``vocab`` section from the checkpoint's vocab.json (``size`` is the LLM's vocabulary)."""
    if "fingerprint" not in vocab_info:
        raise ValueError("checkpoint vocab.json has no 'fingerprint'")
    return {"fingerprint": vocab_info["fingerprint"], "size": int(vocab_info.get("vocab_size") or residual_size),
            "word_table_size": word_table_size, "residual_table_size": residual_size,
            "gguf": vocab_info.get("gguf"), "gguf_sha256": vocab_info.get("gguf_sha256"),
            "bos_id": vocab_info.get("bos_id"), "eos_id": vocab_info.get("eos_id")}


def build_manifest(cfg: Any, vocab_info: dict[str, Any], chunk_frames: list[int], state: dict[str, list],
                   graphs: dict[str, dict], golden: dict[str, str], codebook_arrays: list[str]) -> dict[str, Any]:
    """Assemble the manifest (``files`` is filled by ``finalize``)."""
    return {
        "format_version": FORMAT_VERSION,
        "created_by": "export.onnx",
        "git_sha": git_sha(),
        "codec": codec_facts(cfg),
        "latency_ms": latency_ms(cfg),
        "chunk_frames": sorted(chunk_frames),
        "state": {**state, "init": "zeros"},
        "graphs": graphs,
        "codebooks": {"file": "codebooks.npz", "arrays": codebook_arrays,
                      "word_table_size": cfg.word_table_size, "vocab_size": cfg.vocab_size},
        "vocab": vocab_facts(vocab_info, cfg.vocab_size, cfg.word_table_size),
        "golden": golden,
        "files": {},
    }


def metadata(manifest: dict[str, Any], graph: str) -> dict[str, str]:
    """ONNX ``metadata_props`` for one graph: the manifest's facts, JSON-encoded, plus the graph name."""
    props = {k: json.dumps(manifest[k]) for k in METADATA_KEYS}
    props["graph"] = graph
    return props


def finalize(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``bundle_dir`` (except the manifest) and write ``manifest.json``."""
    manifest["files"] = {p.relative_to(bundle_dir).as_posix(): sha256_file(p)
                         for p in sorted(bundle_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
