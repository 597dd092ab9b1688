"""LLM vocabulary identity for the runtime (torch-free: reads GGUFs with `gguf`).

A codec bundle is only meaningful with the LLM whose embedding table it was trained on, so the
runtime compares fingerprints of the piece lists (docs/design.md "Fingerprint"): sha256 over,
for each piece in id order, the 4-byte little-endian length of its UTF-8 bytes then the bytes.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Iterable

TOKENS_KEY = "tokenizer.ggml.tokens"


def _piece_bytes(path: str | Path) -> list[bytes]:
    """Raw UTF-8 bytes of every piece of a GGUF, id order (no decode/encode round trip)."""
    import gguf

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF not found: {p}")
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as e:  # gguf raises ValueError/struct errors on corrupt files
        raise ValueError(f"{p} is not a readable GGUF file: {e}") from e
    field = reader.fields.get(TOKENS_KEY)
    if field is None:
        raise ValueError(f"{p} has no {TOKENS_KEY}: no vocabulary to fingerprint")
    return [bytes(field.parts[i]) for i in field.data]


def gguf_pieces(path: str | Path) -> list[str]:
    """The vocabulary pieces of a GGUF (``tokenizer.ggml.tokens``), in id order."""
    return [b.decode("utf-8") for b in _piece_bytes(path)]


def fingerprint_of_bytes(pieces: Iterable[bytes]) -> str:
    """The fingerprint of pieces given as raw UTF-8 bytes (as GGUF and llama.cpp store them)."""
    h = hashlib.sha256()
    for b in pieces:
        h.update(struct.pack("<I", len(b)))
        h.update(b)
    return "sha256:" + h.hexdigest()


def vocab_fingerprint(pieces: Iterable[str]) -> str:
    """``"sha256:<hex>"`` over (u32 LE length, UTF-8 bytes) of each piece in id order."""
    return fingerprint_of_bytes(p.encode("utf-8") for p in pieces)


def gguf_fingerprint(path: str | Path) -> str:
    """Fingerprint of a GGUF's vocabulary (same value as `vocab_fingerprint(gguf_pieces(path))`)."""
    return fingerprint_of_bytes(_piece_bytes(path))
