"""The versioned ``.tokens`` file: round trip, corruption, and refusing a mismatched bundle."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from runtime.tokens_file import MAGIC, TokensFile, TokensFileError, read_tokens, write_tokens


def make_tokens(groups: int = 5, seed: int = 0) -> TokensFile:
    rng = np.random.default_rng(seed)
    return TokensFile(codes=[rng.integers(0, 50, groups), rng.integers(0, 300, 2 * groups),
                             rng.integers(0, 300, 4 * groups)],
                      fingerprint="sha256:" + "a" * 64, word_table_sha256="sha256:" + "b" * 64,
                      bundle_id="sha256:" + "c" * 32, sample_rate=16000, hop=480, vq_strides=(4, 2, 1),
                      codebook_sizes=(50, 300, 300), n_samples=groups * 1920 - 7)


def test_round_trip(tmp_path):
    t = make_tokens()
    write_tokens(tmp_path / "a.tokens", t)
    r = read_tokens(tmp_path / "a.tokens")
    assert [c.tolist() for c in r.codes] == [c.tolist() for c in t.codes]
    assert (r.fingerprint, r.n_samples, r.vq_strides, r.codebook_sizes) == (t.fingerprint, t.n_samples, (4, 2, 1),
                                                                              (50, 300, 300))
    data = (tmp_path / "a.tokens").read_bytes()
    assert data[:8] == MAGIC and struct.unpack_from("<H", data, 8)[0] == 2
    hlen = struct.unpack_from("<I", data, 10)[0]
    assert hlen < 512 and len(data) == 14 + hlen + 4 * 35, "small: a short header, then 4 bytes per code"


def test_zero_groups_round_trip(tmp_path):
    write_tokens(tmp_path / "e.tokens", make_tokens(groups=0))
    assert read_tokens(tmp_path / "e.tokens").n_groups == 0


def _corrupt(path, fn):
    path.write_bytes(fn(bytearray(path.read_bytes())))


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda b: b"WAVE" + b[4:], "bad magic", id="magic"),
    pytest.param(lambda b: b[:8] + struct.pack("<H", 7) + b[10:], "unknown .tokens version 7", id="version"),
    pytest.param(lambda b: b[:-3], "truncated", id="truncated"),
    pytest.param(lambda b: b[:14] + b"}" + b[15:], "corrupt header", id="header-json"),
    pytest.param(lambda b: b[:-4] + struct.pack("<i", 300), "layer-3 code outside", id="code-range"),
    pytest.param(lambda b: b"", "bad magic", id="empty"),
])
def test_corrupt_files_are_refused(tmp_path, edit, message):
    path = tmp_path / "a.tokens"
    write_tokens(path, make_tokens())
    _corrupt(path, edit)
    with pytest.raises(TokensFileError, match=message):
        read_tokens(path)


def test_missing_file(tmp_path):
    with pytest.raises(TokensFileError, match="does not exist"):
        read_tokens(tmp_path / "nope.tokens")


def test_inconsistent_layer_lengths_are_not_written(tmp_path):
    t = make_tokens()
    t.codes[2] = t.codes[2][:-1]
    with pytest.raises(ValueError, match="layer 3 has 19 codes, expected 20"):
        write_tokens(tmp_path / "x.tokens", t)


def test_check_bundle():
    t = make_tokens()
    t.check_bundle(t.fingerprint, t.word_table_sha256, (4, 2, 1), t.bundle_id)
    with pytest.raises(TokensFileError, match="vocabulary"):
        t.check_bundle("sha256:" + "0" * 64, t.word_table_sha256, (4, 2, 1))
    with pytest.raises(TokensFileError, match="word table"):
        t.check_bundle(t.fingerprint, "sha256:x", (4, 2, 1))
    with pytest.raises(TokensFileError, match="strides"):
        t.check_bundle(t.fingerprint, t.word_table_sha256, (2, 1, 1))
    with pytest.raises(TokensFileError, match="--allow-other-bundle"):
        t.check_bundle(t.fingerprint, t.word_table_sha256, (4, 2, 1), "sha256:other")
    t.check_bundle(t.fingerprint, t.word_table_sha256, (4, 2, 1), None)
