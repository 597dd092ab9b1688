"""The ``.tokens`` file: codec codes of one recording, tied to the bundle that produced them.

Layout (little-endian)::

    magic   8 bytes  b"LLMCTOK\\x00"
    version uint16   TOKENS_VERSION
    hlen    uint32   length of the JSON header
    header  hlen bytes UTF-8 JSON: fingerprint, word_table_sha256, bundle_id, sample_rate, hop,
            vq_strides, codebook_sizes, n_groups, n_samples, lengths,
            token_tables_sha256 (version 2: per layer, sha256 of its int64 LE token-id table)
    codes   int32 per layer, layer-major: layer l holds n_groups * strides[0] / strides[l] codes

Layer-l codes index that layer's token table (code i <-> LLM token table[i]), so a file is only
meaningful with a bundle of the same vocabulary fingerprint and tables: ``check_bundle`` refuses any
other. Version 1 files (no per-layer hashes; layers 2+ were code = id) are still read.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli import atomic_path

MAGIC = b"LLMCTOK\x00"
TOKENS_VERSION = 2
READABLE_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<8sHI")


class TokensFileError(ValueError):
    """A ``.tokens`` file is corrupt, of an unknown version, or belongs to another bundle."""


@dataclass
class TokensFile:
    """Codes of ``n_groups`` groups: ``codes[l]`` is int64 ``(n_groups * strides[0] // strides[l],)``."""

    codes: list[np.ndarray]
    fingerprint: str
    word_table_sha256: str
    bundle_id: str
    sample_rate: int
    hop: int
    vq_strides: tuple[int, ...]
    codebook_sizes: tuple[int, ...]
    n_samples: int
    token_tables_sha256: list[str] | None = None  # None: a version-1 file
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return len(self.codes[0])

    def header(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "word_table_sha256": self.word_table_sha256,
                "bundle_id": self.bundle_id, "sample_rate": self.sample_rate, "hop": self.hop,
                "vq_strides": list(self.vq_strides), "codebook_sizes": list(self.codebook_sizes),
                "n_groups": self.n_groups, "n_samples": self.n_samples,
                "lengths": [int(len(c)) for c in self.codes], **self.extra,
                **({} if self.token_tables_sha256 is None else {"token_tables_sha256": list(self.token_tables_sha256)})}

    def check_bundle(self, fingerprint: str, word_table_sha256: str, strides: tuple[int, ...],
                     bundle_id: str | None = None, token_tables_sha256: list[str] | None = None) -> None:
        """Refuse a bundle whose codes mean something else (vocabulary, word table, strides, codec)."""
        if fingerprint != self.fingerprint:
            raise TokensFileError(f"tokens were written for vocabulary {self.fingerprint}, "
                                  f"the codec bundle has {fingerprint}")
        if word_table_sha256 != self.word_table_sha256:
            raise TokensFileError("tokens were written with another layer-1 word table than the codec bundle's")
        if token_tables_sha256 is not None and self.token_tables_sha256 is not None \
                and list(token_tables_sha256) != list(self.token_tables_sha256):
            raise TokensFileError("tokens were written with other codebook token tables than the codec bundle's "
                                  "(same vocabulary, different layer-2+ token subset)")
        if tuple(strides) != tuple(self.vq_strides):
            raise TokensFileError(f"tokens use VQ strides {self.vq_strides}, the codec bundle {tuple(strides)}")
        if bundle_id is not None and bundle_id != self.bundle_id:
            raise TokensFileError(f"tokens were written by codec bundle {self.bundle_id}, not {bundle_id} "
                                  "(pass --allow-other-bundle to decode with a different codec of the same vocabulary)")


def write_tokens(path: str | Path, tokens: TokensFile) -> None:
    """Write ``tokens`` to ``path`` (overwrites; the CLI checks ``--force``)."""
    _check_lengths(tokens.codes, tokens.vq_strides)
    header = json.dumps(tokens.header(), sort_keys=True).encode()
    body = b"".join(np.asarray(c, dtype="<i4").tobytes() for c in tokens.codes)
    with atomic_path(path) as tmp:  # never a half-written file under the real name (Ctrl-C)
        tmp.write_bytes(_PREFIX.pack(MAGIC, TOKENS_VERSION, len(header)) + header + body)


def read_tokens(path: str | Path) -> TokensFile:
    """Read and validate a ``.tokens`` file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise TokensFileError(f"tokens file {path} does not exist")
    if not path.is_file():
        raise TokensFileError(f"tokens path {path} is a directory or special file, not a .tokens file")
    data = path.read_bytes()
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise TokensFileError(f"{path} is not a .tokens file (bad magic)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version not in READABLE_VERSIONS:
        raise TokensFileError(f"{path}: unknown .tokens version {version} (this runtime reads {READABLE_VERSIONS})")
    try:
        h = json.loads(data[_PREFIX.size:_PREFIX.size + hlen].decode())
        strides = tuple(int(s) for s in h["vq_strides"])
        lengths = [int(n) for n in h["lengths"]]
        known = ("fingerprint", "word_table_sha256", "bundle_id", "sample_rate", "hop", "vq_strides",
                 "codebook_sizes", "n_groups", "n_samples", "lengths", "token_tables_sha256")
        tables = h.get("token_tables_sha256")
        tokens = TokensFile(
            codes=[], fingerprint=str(h["fingerprint"]), word_table_sha256=str(h["word_table_sha256"]),
            bundle_id=str(h["bundle_id"]), sample_rate=int(h["sample_rate"]), hop=int(h["hop"]),
            vq_strides=strides, codebook_sizes=tuple(int(s) for s in h["codebook_sizes"]),
            n_samples=int(h["n_samples"]), extra={k: v for k, v in h.items() if k not in known},
            token_tables_sha256=None if tables is None else [str(t) for t in tables])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise TokensFileError(f"{path}: corrupt header ({type(e).__name__}: {e})") from None
    body = data[_PREFIX.size + hlen:]
    if len(body) != 4 * sum(lengths):
        raise TokensFileError(f"{path}: truncated or corrupt ({len(body)} code bytes, header says {4 * sum(lengths)})")
    codes, offset = [], 0
    for n in lengths:
        codes.append(np.frombuffer(body, dtype="<i4", count=n, offset=offset).astype(np.int64))
        offset += 4 * n
    try:
        _check_lengths(codes, strides)
    except ValueError as e:
        raise TokensFileError(f"{path}: {e}") from None
    for layer, (c, size) in enumerate(zip(codes, tokens.codebook_sizes), start=1):
        if len(c) and (c.min() < 0 or c.max() >= size):
            raise TokensFileError(f"{path}: layer-{layer} code outside 0..{size - 1}")
    tokens.codes = codes
    return tokens


def _check_lengths(codes: list[np.ndarray], strides: tuple[int, ...]) -> None:
    if len(codes) != len(strides):
        raise ValueError(f"{len(codes)} code layers for {len(strides)} VQ strides")
    groups = len(codes[0])
    for layer, (c, s) in enumerate(zip(codes, strides), start=1):
        if len(c) != groups * strides[0] // s:
            raise ValueError(f"layer {layer} has {len(c)} codes, expected {groups * strides[0] // s} "
                             f"for {groups} groups")
