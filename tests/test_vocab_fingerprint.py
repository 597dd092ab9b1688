"""runtime.vocab fingerprints agree with an independent computation and with codec.vocab."""
from __future__ import annotations

import hashlib
import struct

import pytest

from fixtures_llm import VOCAB_GGUF, sp, tiny_gguf  # noqa: F401
from runtime.vocab import gguf_fingerprint, gguf_pieces, vocab_fingerprint


def _independent(pieces) -> str:
    h = hashlib.sha256()
    for p in pieces:
        b = p.encode("utf-8")
        h.update(struct.pack("<I", len(b)) + b)
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="module")
def spm_pieces(sp):
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def test_gguf_pieces_are_sentencepiece_pieces(spm_pieces):
    pieces = gguf_pieces(VOCAB_GGUF)
    assert len(pieces) == 32000 and pieces[278] == "▁the" and pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert pieces == spm_pieces


def test_fingerprint_matches_independent_sentencepiece_value(spm_pieces):
    want = _independent(spm_pieces)
    assert gguf_fingerprint(VOCAB_GGUF) == want
    assert vocab_fingerprint(spm_pieces) == want
    changed = list(spm_pieces)
    changed[5000], changed[5001] = changed[5001], changed[5000]
    assert vocab_fingerprint(changed) != want


def test_tiny_model_carries_the_same_vocabulary(tiny_gguf):
    assert gguf_fingerprint(tiny_gguf) == gguf_fingerprint(VOCAB_GGUF)


def test_codec_side_agrees(spm_pieces):
    codec_vocab = pytest.importorskip("codec.vocab", reason="codec.vocab not available")
    assert codec_vocab.vocab_fingerprint(spm_pieces) == vocab_fingerprint(spm_pieces)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        gguf_fingerprint(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        gguf_fingerprint(bad)
