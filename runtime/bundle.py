"""Read and validate a codec bundle (the directory ``python -m export.onnx`` writes). No torch.

A bundle is self-describing: ``manifest.json`` carries every fact the runtime needs (rates, strides,
state names/shapes/dtypes, graph inputs/outputs, the LLM vocabulary fingerprint) plus the sha256 of
every file, so a truncated copy or a swapped graph is refused by name instead of running garbage.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 2
# Version 1 bundles (no per-layer token tables: layers 2+ were the whole vocabulary, code = id) still load.
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
CODEBOOKS = "codebooks.npz"


class BundleError(ValueError):
    """The bundle is missing, corrupt, of an unknown format, or does not match its manifest."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: ``shape`` entries are ints or symbolic names (dynamic axes)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), tuple(d["shape"]), str(d["dtype"]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle: ``kind`` is encoder_step/decoder_step/encoder_offline/decoder_offline."""

    name: str
    file: str
    kind: str
    chunk_frames: int | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> "GraphSpec":
        return cls(name, str(d["file"]), str(d["kind"]), d.get("chunk_frames"),
                   tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in d["outputs"]))


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file, streamed in 1 MiB blocks (graphs can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def graph_name(kind: str, chunk_frames: int | None = None) -> str:
    """Bundle graph names: ``encoder_step_c4``, ``decoder_offline`` ..."""
    part = kind.split("_")[0]
    return f"{part}_step_c{chunk_frames}" if kind.endswith("_step") else f"{part}_offline"


class Bundle:
    """A validated bundle directory: manifest facts, graph specs, codebook tables and initial state.

    Construction checks ``format_version``, that every file listed in the manifest exists and that
    its sha256 matches (``verify_hashes=False`` skips hashing, for tools that rewrite the bundle).
    """

    def __init__(self, path: str | Path, verify_hashes: bool = True) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        check_files(self.path, self.manifest, verify_hashes)
        m = self.manifest
        try:
            codec = m["codec"]
            self.sample_rate: int = int(codec["sample_rate"])
            self.hop: int = int(codec["hop"])
            self.strides: tuple[int, ...] = tuple(int(s) for s in codec["vq_strides"])
            self.latent_dim: int = int(codec["latent_dim"])
            self.codebook_sizes: tuple[int, ...] = tuple(int(s) for s in codec["codebook_sizes"])
            self.chunk_frames: tuple[int, ...] = tuple(sorted(int(k) for k in m["chunk_frames"]))
            self.fingerprint: str = str(m["vocab"]["fingerprint"])
            self.graphs: dict[str, GraphSpec] = {n: GraphSpec.from_dict(n, g) for n, g in m["graphs"].items()}
            self.state: dict[str, tuple[TensorSpec, ...]] = {
                part: tuple(TensorSpec.from_dict(t) for t in m["state"][part]) for part in ("encoder", "decoder")}
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.path / MANIFEST}: malformed manifest ({type(e).__name__}: {e})") from None
        for k in self.chunk_frames:
            for part in ("encoder", "decoder"):
                if graph_name(f"{part}_step", k) not in self.graphs:
                    raise BundleError(f"{self.path / MANIFEST}: chunk size {k} listed but graph "
                                      f"{graph_name(f'{part}_step', k)} is missing")

    @property
    def group_frames(self) -> int:
        return self.strides[0]

    def file(self, rel: str) -> Path:
        return self.path / rel

    def graph_path(self, name: str) -> Path:
        if name not in self.graphs:
            raise BundleError(f"{self.path}: no graph {name!r} (have {sorted(self.graphs)})")
        return self.path / self.graphs[name].file

    def load_codebooks(self) -> dict[str, np.ndarray]:
        """All arrays of ``codebooks.npz`` (``layer{l}_normed_f32`` ... ``word_token_ids``)."""
        return _load_npz(self.path / CODEBOOKS)

    def initial_state(self, part: str) -> list[np.ndarray]:
        """The initial streaming state of ``part`` ("encoder"/"decoder") in graph input order: zeros
        of the manifest's shapes/dtypes (the streaming contract; export checks torch agrees)."""
        return [np.zeros(tuple(int(d) for d in spec.shape), dtype=spec.dtype) for spec in self.state[part]]


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse ``manifest.json`` and check ``format_version``; every failure names the file."""
    if not path.is_dir():
        raise BundleError(f"codec bundle {path} does not exist or is not a directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath} is missing: {path} is not a codec bundle (write one with python -m export.onnx)")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath} is corrupt: {e}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} is corrupt: top level is not an object")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(f"{mpath}: unknown format_version {version!r} (this runtime reads {READABLE_VERSIONS}); "
                          "re-export the bundle or upgrade the runtime")
    return manifest


def check_files(path: Path, manifest: dict[str, Any], verify_hashes: bool = True) -> None:
    """Every file in ``manifest["files"]`` exists (and has the recorded sha256)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path / MANIFEST}: no 'files' table with hashes")
    for rel, digest in files.items():
        fpath = path / rel
        if not fpath.is_file():
            raise BundleError(f"bundle file {fpath} is missing")
        if verify_hashes and sha256_file(fpath) != digest:
            raise BundleError(f"bundle file {fpath} does not match its sha256 in {MANIFEST} "
                              "(corrupt or modified; re-export the bundle)")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is not a readable npz file: {e}") from None
