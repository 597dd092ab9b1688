"""codec.vocab on the real LLaMA-2 vocabulary and on small GGUFs written with gguf.GGUFWriter."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from codec.vocab import (SHORT_WORDS, SpmBpe, VocabError, build_word_table, load_vocab, load_word_list,
                         make_vocab_info,
                         vocab_fingerprint, word_candidates, word_table_words)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB_GGUF = DATA / "vocab" / "ggml-vocab-llama-spm.gguf"
SPM_MODEL = DATA / "vocab" / "llama2_tokenizer.model"


@pytest.fixture(scope="module")
def real_vocab():
    if not VOCAB_GGUF.is_file():
        pytest.skip(f"shared vocabulary missing: {VOCAB_GGUF}")
    return load_vocab(VOCAB_GGUF)


@pytest.fixture(scope="module")
def sp():
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(SPM_MODEL))


def test_real_vocab_fields(real_vocab):
    v = real_vocab
    assert v.size == 32000 and len(v.scores) == 32000 and len(v.token_types) == 32000
    assert v.pieces[278] == "\u2581the"
    assert (v.bos_id, v.eos_id, v.unk_id) == (1, 2, 0)
    assert v.embeddings is None and v.dim is None  # vocab-only GGUF
    assert v.pieces[3] == "<0x00>" and v.token_types[3] == 6  # byte pieces


@pytest.mark.parametrize("size", [pytest.param(3000, id="3000"), pytest.param(500, id="500")])
def test_word_table_single_tokens(real_vocab, sp, size):
    ids = build_word_table(real_vocab, size)
    assert ids.dtype == np.int64 and ids.shape == (size,)
    assert len(set(ids.tolist())) == size
    words = word_table_words(real_vocab, ids)
    for word, tid in zip(words, ids):
        assert word.isascii() and word.isalpha() and word.islower()
        assert sp.encode(word) == [int(tid)], word  # the reference tokenizer: exactly one token
    np.testing.assert_array_equal(ids, build_word_table(real_vocab, size))  # deterministic


def test_word_table_prefix_property_and_rank(real_vocab):
    big, small = build_word_table(real_vocab, 3000), build_word_table(real_vocab, 200)
    np.testing.assert_array_equal(big[:200], small)
    scores = real_vocab.scores[big]
    assert np.all(np.diff(scores) <= 0)  # ranked by score, most frequent first
    assert 278 in big[:10].tolist()  # "▁the"


def test_word_table_holds_whole_english_words(real_vocab):
    words = word_table_words(real_vocab, build_word_table(real_vocab, 3000))
    dictionary = load_word_list()
    assert all(w in dictionary and (len(w) >= 3 or w in SHORT_WORDS) for w in words)
    for fragment in ("th", "wh", "interpre", "abgerufen", "mehr"):  # high-score "▁word" pieces
        assert fragment not in words
    assert {"the", "dog", "happened", "beautiful"} <= set(words)


def test_word_list_errors(tmp_path):
    with pytest.raises(VocabError, match="wamerican"):
        load_word_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("Capitalised\n123\n")
    with pytest.raises(VocabError, match="no lower-case"):
        load_word_list(tmp_path / "empty.txt")


def test_word_table_too_large(real_vocab):
    with pytest.raises(VocabError, match="single-token"):
        build_word_table(real_vocab, len(word_candidates(real_vocab)) + 1)


def test_bpe_matches_sentencepiece(real_vocab, sp):
    bpe = SpmBpe(real_vocab)
    for text in ["Kids are talking by the door", "sea waves", "crying baby", "HELLO world 123",
                 "café naïve", "vacuum cleaner", "He hoped there would be stew for dinner"]:
        assert bpe.encode(text) == sp.encode(text), text


def test_fingerprint_matches_sentencepiece(real_vocab, sp):
    fp = vocab_fingerprint(real_vocab.pieces)
    assert fp == vocab_fingerprint(list(real_vocab.pieces)) and fp.startswith("sha256:")
    h = hashlib.sha256()
    for i in range(sp.get_piece_size()):
        raw = sp.id_to_piece(i).encode("utf-8")
        h.update(struct.pack("<I", len(raw)) + raw)
    assert fp == "sha256:" + h.hexdigest()
    assert vocab_fingerprint(real_vocab.pieces[:-1]) != fp


# ------------------------------------------------------------------------- small synthetic GGUFs
S = "\u2581"
# Scores are -id, so lower ids merge first; "▁cat" has no merge path (no "▁c"), so BPE never
# produces it and it must not enter the word table.
PIECES = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(4)] + \
         [S + "t", S + "th", S + "the", S + "d", S + "do", S + "dog", S + "a", S + "x", S + "Sea", S + "1",
          S + "cat", S, "t", "h", "e", "d", "o", "g", "a", "x", "c"]


def _write_gguf(path: Path, table: np.ndarray | None, qtype: str = "F32", model: str = "llama",
                n_pieces: int | None = None) -> Path:
    import gguf

    pieces = PIECES[: n_pieces or len(PIECES)]
    types = [2, 3, 3] + [6] * 4 + [1] * (len(pieces) - 7)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    w.add_token_list(pieces)
    w.add_token_scores([-float(i) for i in range(len(pieces))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if table is not None:
        q = getattr(gguf.GGMLQuantizationType, qtype)
        if qtype == "F32":
            w.add_tensor("token_embd.weight", table.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor("token_embd.weight", table.astype(np.float16))
        else:
            data = gguf.quants.quantize(table.astype(np.float32), q)
            w.add_tensor("token_embd.weight", data, raw_shape=data.shape, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype,rtol", [pytest.param("F32", 0, id="f32"), pytest.param("F16", 1e-3, id="f16"),
                                        pytest.param("BF16", 8e-3, id="bf16"), pytest.param("Q8_0", 1e-2, id="q8_0")])
def test_dequantised_embeddings(tmp_path, qtype, rtol):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((len(PIECES), 64)).astype(np.float32)
    v = load_vocab(_write_gguf(tmp_path / f"{qtype}.gguf", table, qtype))
    assert v.embeddings.shape == (len(PIECES), 64) and v.embeddings.dtype == np.float32
    err = np.abs(v.embeddings - table).max() / np.abs(table).max()
    assert err <= rtol + 1e-7, err
    if qtype != "F32":
        assert err > 0  # really went through the lossy path
    assert v.pieces == PIECES and v.dim == 64


def test_small_vocab_word_table(tmp_path):
    v = load_vocab(_write_gguf(tmp_path / "v.gguf", None))
    # "▁Sea" (capital), "▁1" (digit), "▁t"/"▁x" (single letters other than a/i) are not candidates;
    # "▁cat" is a candidate but not reachable by BPE, so it is not a single-token word.
    assert word_table_words(v, word_candidates(v)) == ["th", "the", "do", "dog", "a", "cat"]
    assert word_table_words(v, build_word_table(v, 5, dictionary=None)) == ["th", "the", "do", "dog", "a"]
    # with a word list, fragments ("th") go; short words only from the common set ("do", "a")
    words = frozenset({"the", "do", "dog", "a", "cat", "th"})
    assert word_table_words(v, build_word_table(v, 4, dictionary=words)) == ["the", "do", "dog", "a"]
    assert SpmBpe(v).encode("the dog cat") == [9, 12, 18, 27, 25, 19]
    with pytest.raises(VocabError, match="only 5"):
        build_word_table(v, 6, dictionary=None)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_vocab(tmp_path / "missing.gguf")
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(VocabError, match="not a readable GGUF"):
        load_vocab(bad)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(VOCAB_GGUF.read_bytes()[:5000])
    with pytest.raises(VocabError):
        load_vocab(trunc)
    table = np.zeros((len(PIECES) + 1, 32), np.float32)
    with pytest.raises(VocabError, match="size mismatch"):
        load_vocab(_write_gguf(tmp_path / "mismatch.gguf", table))
    with pytest.raises(VocabError, match="'gpt2'"):
        load_vocab(_write_gguf(tmp_path / "gpt2.gguf", None, model="gpt2"))


def test_tiny_llm_gguf_and_vocab_info(tmp_path, real_vocab):
    tiny_llm = pytest.importorskip("scripts.tiny_llm")
    path = tiny_llm.build_tiny_llm(tmp_path / "tiny.gguf", VOCAB_GGUF, dim=32, n_layers=1, n_heads=2, n_kv_heads=2)
    v = load_vocab(path)
    assert v.embeddings.shape == (32000, 32) and v.fingerprint == real_vocab.fingerprint
    ids = build_word_table(v, 100)
    info = make_vocab_info(v, ids)
    assert info["fingerprint"] == real_vocab.fingerprint and info["word_token_ids"] == ids.tolist()
    assert info["gguf"] == "tiny.gguf" and len(info["gguf_sha256"]) == 64 and info["llm_dim"] == 32
