"""runtime.prefix_cache: demonstration-prefix KV states on disk, verified on load (tiny real GGUFs)."""
from __future__ import annotations

import hashlib
import json
import struct
import warnings

import numpy as np
import pytest

from fixtures_llm import make_lm, tiny_gguf  # noqa: F401

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
from runtime.draft import NgramDrafter  # noqa: E402
from runtime.prefix_cache import PrefixCache, PrefixCacheWarning, default_cache_dir  # noqa: E402

RNG = np.random.default_rng(77)
PREFIX = [1] + RNG.integers(3, 32000, 140).tolist()
QUERY = RNG.integers(3, 32000, 9).tolist()
HEAD = struct.Struct("<8sHI")


def _lm(make_lm, tiny_gguf, cache_dir, **kw):
    lm = make_lm(tiny_gguf, **kw)
    lm.prefix_cache = PrefixCache(cache_dir)
    return lm


def _cold(make_lm, tiny_gguf, tmp_path):
    lm = _lm(make_lm, tiny_gguf, tmp_path)
    first = lm.eval_prefix(PREFIX)
    return lm, first, lm.generate(PREFIX + QUERY, 12, drafter=NgramDrafter())


def test_cached_start_equals_cold_start(tiny_gguf, make_lm, tmp_path):
    lm, first, gen = _cold(make_lm, tiny_gguf, tmp_path)
    files = list((tmp_path / "prefix").glob("*.kv"))
    assert len(files) == 1 and lm.prefix_cache.misses == 1
    warm = _lm(make_lm, tiny_gguf, tmp_path)
    got = warm.eval_prefix(PREFIX)
    assert warm.prefix_cache.hits == 1 and warm.stats.evaluated_tokens == 1  # the verification replay
    np.testing.assert_array_equal(got, first)
    assert warm.generate(PREFIX + QUERY, 12, drafter=NgramDrafter()) == gen
    np.testing.assert_allclose(warm.logits(PREFIX + QUERY), make_lm(tiny_gguf).logits(PREFIX + QUERY), atol=1e-4)
    # Another prefix, n_ctx or KV type is another file.
    _lm(make_lm, tiny_gguf, tmp_path).eval_prefix(PREFIX[:-1])
    _lm(make_lm, tiny_gguf, tmp_path, n_ctx=1024).eval_prefix(PREFIX)
    _lm(make_lm, tiny_gguf, tmp_path, kv_type="f32").eval_prefix(PREFIX)
    assert len(list((tmp_path / "prefix").glob("*.kv"))) == 4


def _rewrite(path, edit_state=None, edit_header=None):
    data = path.read_bytes()
    _, _, hlen = HEAD.unpack_from(data)
    header = json.loads(data[HEAD.size:HEAD.size + hlen])
    body = bytearray(data[HEAD.size + hlen:])
    state, row = body[:header["state_bytes"]], body[header["state_bytes"]:]
    if edit_state:
        edit_state(state)
        header["state_sha256"] = hashlib.sha256(state).hexdigest()  # a "valid" file with wrong content
    if edit_header:
        edit_header(header)
    h = json.dumps(header).encode()
    path.write_bytes(HEAD.pack(b"LLMCPFX\0", 1, len(h)) + h + bytes(state) + bytes(row))


def _flip_kv_values(state: bytearray) -> None:
    # Tiny f16 KV values sit after llama.cpp's small per-cell header: scale a stretch of them.
    tail = np.frombuffer(bytes(state[-4096:]), dtype=np.float16).copy()
    state[-4096:] = (tail * np.float16(3.0) + np.float16(0.5)).tobytes()


@pytest.mark.parametrize("damage,why", [
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:1000]), "payload has", id="truncated"),
    pytest.param(lambda p: p.write_bytes(b"junk" * 10), "not a version-1", id="not-a-cache-file"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-50] + b"\x13" * 50), "logits checksum",
                 id="logits-bytes-damaged"),
    # Checksums forged over wrong KV values: only the replay of the last token can tell.
    pytest.param(lambda p: _rewrite(p, edit_state=_flip_kv_values), "replaying the last token",
                 id="kv-values-wrong-checksum-forged"),
    pytest.param(lambda p: _rewrite(p, edit_header=lambda h: h.update(llama_cpp="0.0.1")), "made for another llama_cpp",
                 id="other-llama-cpp"),
    pytest.param(lambda p: _rewrite(p, edit_header=lambda h: h.update(model_sha256="0" * 64)),
                 "made for another model_sha256", id="other-model"),
])
def test_damaged_or_mismatched_file_is_rebuilt_with_a_warning(tiny_gguf, make_lm, tmp_path, damage, why):
    _, first, gen = _cold(make_lm, tiny_gguf, tmp_path)
    (path,) = (tmp_path / "prefix").glob("*.kv")
    damage(path)
    lm = _lm(make_lm, tiny_gguf, tmp_path)
    with pytest.warns(PrefixCacheWarning, match=f"rebuilding it: {why}"):
        got = lm.eval_prefix(PREFIX)
    assert lm.prefix_cache.rebuilt == 1
    np.testing.assert_array_equal(got, first)
    assert lm.generate(PREFIX + QUERY, 12, drafter=NgramDrafter()) == gen
    again = _lm(make_lm, tiny_gguf, tmp_path)  # the rebuilt file is good
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrefixCacheWarning)
        np.testing.assert_array_equal(again.eval_prefix(PREFIX), first)
    assert again.prefix_cache.hits == 1


def test_file_of_another_prefix_under_this_name_is_refused(tiny_gguf, make_lm, tmp_path):
    lm = _lm(make_lm, tiny_gguf, tmp_path)
    lm.eval_prefix(PREFIX[:100])
    cache = lm.prefix_cache
    other = cache.path_for(cache.key(lm, PREFIX[:100]))
    other.replace(cache.path_for(cache.key(lm, PREFIX)))
    fresh = _lm(make_lm, tiny_gguf, tmp_path)
    with pytest.warns(PrefixCacheWarning, match="ids_sha256"):
        fresh.eval_prefix(PREFIX)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCODEC_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert PrefixCache().dir == tmp_path / "c" / "prefix"
    monkeypatch.delenv("LLMCODEC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "llmcodec-edge"
