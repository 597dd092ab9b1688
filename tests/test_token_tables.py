"""Per-layer codebook token tables (code i <-> LLM token ids[i]) through checkpoint, bundle and .tokens,
older formats still read, weights-only checkpoints, and the LLM loader's readable errors."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from export_fixtures import TINY_V, build_tiny_checkpoint, real_speech, tiny_export, tiny_vocab_info
from fixtures_llm import VOCAB_GGUF
from fixtures_tasks import task_llm  # noqa: F401  (fixture)

pytest.importorskip("torch", reason="building test checkpoints needs torch (training install)")


def _subset_checkpoint(directory: Path, llm_size: int = 1000) -> tuple[Path, list[int]]:
    """A tiny checkpoint whose layer-2/3 table is a scattered 300-id subset of a 1000-id vocabulary."""
    from codec.checkpoint import load_checkpoint, save_checkpoint

    build_tiny_checkpoint(directory)
    model, info = load_checkpoint(directory)
    residual = sorted(np.random.default_rng(3).choice(np.arange(4, llm_size), TINY_V, replace=False).tolist())
    info = {**info, "vocab_size": llm_size, "residual_token_ids": residual}
    save_checkpoint(directory, model, info, overwrite=True)
    return directory, residual


@pytest.fixture(scope="module")
def subset_bundle(tmp_path_factory) -> tuple[Path, list[int]]:
    from export.onnx import export_bundle

    root = tmp_path_factory.mktemp("subset")
    ckpt, residual = _subset_checkpoint(root / "ckpt")
    export_bundle(ckpt, root / "bundle", chunk_frames=(4,), log=lambda line: None)
    return root / "bundle", residual


def test_subset_tables_map_codes_both_ways(subset_bundle):
    from runtime.codec import CodecSession

    bundle, residual = subset_bundle
    s = CodecSession(bundle, threads=1)
    assert s.vocab_size == 1000 and s.bundle.codebook_sizes == (50, 300, 300)
    codes = np.array([0, 7, 299])
    for layer in (2, 3):
        ids = s.code_to_token(layer, codes)
        np.testing.assert_array_equal(ids, np.asarray(residual)[codes])
        np.testing.assert_array_equal(s.token_to_code(layer, ids), codes)
        assert s.layer_mask(layer).sum() == 300 and s.layer_mask(layer)[ids].all()
    outside = next(i for i in range(1000) if i not in set(residual))
    with pytest.raises(ValueError, match="not in the layer-2 token table"):
        s.token_to_code(2, [residual[0], outside])
    z = np.load(bundle / "codebooks.npz")
    np.testing.assert_array_equal(z["layer1_token_ids"], z["word_token_ids"])


def test_tokens_file_refuses_other_tables(subset_bundle, tmp_path):
    from runtime.codec import CodecSession
    from runtime.tokens_file import TokensFileError, read_tokens, write_tokens

    s = CodecSession(subset_bundle[0], threads=1)
    pcm = real_speech(seconds=0.5)
    t = s.tokens(s.encode(pcm), len(pcm))
    write_tokens(tmp_path / "a.tokens", t)
    r = read_tokens(tmp_path / "a.tokens")
    assert r.token_tables_sha256 == s.token_tables_sha256 and len(r.token_tables_sha256) == 3
    other = list(s.token_tables_sha256)
    other[2] = "sha256:" + "0" * 64
    with pytest.raises(TokensFileError, match="other codebook token tables"):
        r.check_bundle(s.fingerprint, s.word_table_sha256, s.strides, None, other)


def test_version_1_tokens_file_still_reads(tmp_path):
    from runtime.tokens_file import MAGIC, read_tokens

    header = json.dumps({"fingerprint": "sha256:" + "a" * 64, "word_table_sha256": "sha256:" + "b" * 64,
                         "bundle_id": "x", "sample_rate": 16000, "hop": 480, "vq_strides": [4, 2, 1],
                         "codebook_sizes": [50, 300, 300], "n_groups": 1, "n_samples": 1920,
                         "lengths": [1, 2, 4]}).encode()
    codes = np.array([3, 1, 2, 4, 5, 6, 7], dtype="<i4").tobytes()
    (tmp_path / "v1.tokens").write_bytes(struct.pack("<8sHI", MAGIC, 1, len(header)) + header + codes)
    t = read_tokens(tmp_path / "v1.tokens")
    assert t.token_tables_sha256 is None and [c.tolist() for c in t.codes] == [[3], [1, 2], [4, 5, 6, 7]]


def test_version_1_bundle_reads_as_code_equals_id(tmp_path_factory, tmp_path):
    """Bundles exported before the tables existed: layer 1 from word_token_ids, layers 2+ code = id."""
    from export.manifest import finalize
    from runtime.codec import CodecSession

    old = tmp_path / "v1"
    shutil.copytree(tiny_export(tmp_path_factory) / "bundle", old)
    z = dict(np.load(old / "codebooks.npz"))
    np.savez(old / "codebooks.npz", **{k: v for k, v in z.items() if not k.endswith("_token_ids") or k == "word_token_ids"})
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = 1
    finalize(old, m)
    s = CodecSession(old, threads=1)
    np.testing.assert_array_equal(s.token_tables[0], tiny_vocab_info()["word_token_ids"])
    np.testing.assert_array_equal(s.code_to_token(2, [0, 299]), [0, 299])


def test_weights_only_checkpoint_rebuilds_codebooks_from_the_gguf(task_llm, tmp_path):  # noqa: F811
    import torch

    from codec.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from codec.config import preset
    from codec.model import LLMCodec
    from codec.vocab import build_residual_table, build_word_table, load_vocab, make_vocab_info

    vocab = load_vocab(task_llm)
    words, residual = build_word_table(vocab, 50), build_residual_table(vocab)
    np.testing.assert_array_equal(residual, np.arange(32000))  # LLaMA-2's 32,000: code = id, as in the paper
    cfg = preset("tiny", vocab_size=len(residual), word_table_size=50, llm_dim=vocab.dim)
    table = torch.from_numpy(vocab.embeddings)
    model = LLMCodec(cfg, table[words], table[residual]).eval()
    save_checkpoint(tmp_path / "w", model, make_vocab_info(vocab, words, residual), codebooks=False)
    assert not any("codebook" in k for k in json.loads(_safetensors_header(tmp_path / "w" / "model.safetensors")))
    with pytest.raises(CheckpointError, match="weights-only checkpoint.*--llm"):
        load_checkpoint(tmp_path / "w")
    with pytest.raises(CheckpointError, match="is not the GGUF"):
        load_checkpoint(tmp_path / "w", llm=VOCAB_GGUF)
    again, _ = load_checkpoint(tmp_path / "w", llm=task_llm)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)


def _safetensors_header(path: Path) -> str:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    return data[8:8 + n].decode()


def test_llm_loader_names_an_unrunnable_architecture(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    import gguf

    from runtime.lm import FrozenLM, ModelLoadError

    path = tmp_path / "alien.gguf"
    w = gguf.GGUFWriter(str(path), "alienformer")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match="cannot run architecture 'alienformer'"):
        FrozenLM(path, n_ctx=64, n_threads=1)
