"""The frozen LLM vocabulary: pieces, scores and token embeddings read from a LLaMA-family GGUF.

Torch-free (numpy + gguf), so export and tools can use it without a training install.

Every RVQ layer's codebook is an explicit list of LLM token ids (code ``i`` <-> token ``ids[i]``, a
bijection; docs/design.md, "Token maps"):

- layer 1, the *word table*: ``W`` token ids whose pieces are whole lower-case English words
  (``"▁the"``, ``"▁dog"``), each exactly one token;
- layers 2+, the *residual table* (:func:`build_residual_table`): the whole vocabulary when it has at
  most 32,000 ids (LLaMA-2: code = id), otherwise a deterministic 32,000-id subset of its normal pieces,
  so the "32k-word codebook" holds for every LLM (Gemma 3: 262,144 ids).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# One definition of the fingerprint and file hash, shared with the torch-free runtime that checks them.
from runtime.bundle import sha256_file
from runtime.vocab import vocab_fingerprint

# gguf.TokenType values (kept literal so reading a vocab does not depend on enum spelling).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's visible space "▁"
_WORD_RE = re.compile(r"^[a-z]+$")
_SINGLE_LETTER_WORDS = frozenset({"a", "i"})
EMBEDDING_TENSOR = "token_embd.weight"


class VocabError(ValueError):
    """A GGUF that cannot serve as the codec's LLM vocabulary (the message says why)."""


@dataclass(frozen=True, eq=False)
class LlmVocab:
    """A LLaMA-family vocabulary.

    ``pieces[i]``/``scores[i]``/``token_types[i]`` describe token id ``i`` (V entries);
    ``embeddings`` is the ``(V, D)`` float32 token-embedding table, or None for a vocab-only GGUF.
    """

    pieces: list[str]
    scores: np.ndarray
    token_types: np.ndarray
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int | None
    embeddings: np.ndarray | None
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.pieces)

    @property
    def dim(self) -> int | None:
        """Embedding width D, or None for a vocab-only GGUF."""
        return None if self.embeddings is None else int(self.embeddings.shape[1])

    @property
    def fingerprint(self) -> str:
        return vocab_fingerprint(self.pieces)

    def piece_to_id(self) -> dict[str, int]:
        """Piece -> id (the first id wins if a piece repeats)."""
        table: dict[str, int] = {}
        for i, p in enumerate(self.pieces):
            table.setdefault(p, i)
        return table


def file_sha256(path: str | Path) -> str:
    """Plain hex sha256 of a file (the ``gguf_sha256`` of ``vocab.json``)."""
    return sha256_file(Path(path)).removeprefix("sha256:")


# ----------------------------------------------------------------------------------------- reading
def load_vocab(gguf_path: str | Path, *, load_embeddings: bool = True) -> LlmVocab:
    """Read pieces, scores, token types, special ids and ``token_embd.weight`` from a GGUF.

    Raises FileNotFoundError for a missing file and VocabError for a non-GGUF/corrupt file, a
    tokenizer other than ``llama`` (SentencePiece), or an embedding table that does not match the
    vocabulary size.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = _open_reader(path)
    model = _scalar(reader, "tokenizer.ggml.model", None)
    if model is None:
        raise VocabError(f"{path}: no tokenizer.ggml.model key; not an LLM GGUF with a vocabulary")
    if model != "llama":
        raise VocabError(f"{path}: tokenizer model is {model!r}; only LLaMA SentencePiece vocabularies ('llama') "
                         "are supported (layer-1 words need '▁'-prefixed SentencePiece pieces)")
    pieces = _string_array(reader, "tokenizer.ggml.tokens", path)
    n = len(pieces)
    scores = _numeric_array(reader, "tokenizer.ggml.scores", np.float32, n, default=np.zeros(n, np.float32))
    types = _numeric_array(reader, "tokenizer.ggml.token_type", np.int32, n,
                           default=np.full(n, TOKEN_NORMAL, np.int32))
    embeddings = _read_embeddings(reader, path, n) if load_embeddings else None
    pad = _scalar(reader, "tokenizer.ggml.padding_token_id", None)
    return LlmVocab(
        pieces=pieces, scores=scores, token_types=types,
        bos_id=int(_scalar(reader, "tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(_scalar(reader, "tokenizer.ggml.eos_token_id", 2)),
        unk_id=int(_scalar(reader, "tokenizer.ggml.unknown_token_id", 0)),
        pad_id=None if pad is None else int(pad), embeddings=embeddings, path=path,
    )


def _open_reader(path: Path):
    import gguf  # imported here so `import codec.vocab` stays cheap

    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # the reader raises ValueError/struct errors/IndexError on bad files
        raise VocabError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def _scalar(reader, key: str, default):
    field = reader.get_field(key)
    if field is None:
        return default
    value = field.parts[field.data[0]]
    if field.types and int(field.types[0]) == 8:  # GGUFValueType.STRING
        return bytes(value).decode("utf-8")
    return value.item() if value.size == 1 else value


def _string_array(reader, key: str, path: Path) -> list[str]:
    field = reader.get_field(key)
    if field is None or not field.data:
        raise VocabError(f"{path}: missing {key}; the GGUF has no vocabulary")
    try:
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    except UnicodeDecodeError as exc:
        raise VocabError(f"{path}: {key} is not valid UTF-8 ({exc})") from exc


def _numeric_array(reader, key: str, dtype, n: int, default: np.ndarray) -> np.ndarray:
    field = reader.get_field(key)
    if field is None:
        return default
    values = np.array([field.parts[i][0] for i in field.data], dtype=dtype)
    if len(values) != n:
        raise VocabError(f"{key} has {len(values)} entries but the vocabulary has {n} pieces")
    return values


def _read_embeddings(reader, path: Path, n: int) -> np.ndarray | None:
    import gguf

    tensor = next((t for t in reader.tensors if t.name == EMBEDDING_TENSOR), None)
    if tensor is None:
        return None
    qtype = gguf.GGMLQuantizationType(int(tensor.tensor_type))
    try:
        table = gguf.quants.dequantize(np.asarray(tensor.data), qtype)
    except NotImplementedError as exc:
        raise VocabError(f"{path}: cannot dequantise {EMBEDDING_TENSOR} of type {qtype.name}: {exc}") from exc
    # GGUF stores ne = [D, V] (innermost first); the reader's numpy view is therefore (V, D).
    ne = [int(v) for v in tensor.shape]
    table = np.asarray(table, dtype=np.float32).reshape(list(reversed(ne)))
    if table.ndim != 2:
        raise VocabError(f"{path}: {EMBEDDING_TENSOR} has shape {tuple(table.shape)}; expected 2-D (V, D)")
    if table.shape[0] != n:
        if table.shape[1] == n:  # written transposed by a non-llama.cpp tool
            table = table.T
        else:
            raise VocabError(f"{path}: {EMBEDDING_TENSOR} has shape {tuple(table.shape)} but the vocabulary "
                             f"has {n} pieces (embedding/vocab size mismatch)")
    if not np.all(np.isfinite(table)):
        raise VocabError(f"{path}: {EMBEDDING_TENSOR} holds non-finite values")
    return np.array(table, dtype=np.float32, order="C", copy=True)  # detach from the read-only memmap


# ------------------------------------------------------------------------------ SentencePiece BPE
class SpmBpe:
    """SentencePiece-BPE segmentation over a GGUF vocabulary (as llama.cpp's SPM tokenizer does).

    Per word: start from characters, repeatedly merge the adjacent pair whose concatenation is a
    piece with the highest score (leftmost on ties); characters without a piece fall back to
    ``<0xXX>`` byte pieces, then to ``unk``.
    """

    def __init__(self, vocab: LlmVocab) -> None:
        self._ids = vocab.piece_to_id()
        self._scores = vocab.scores
        self._unk = vocab.unk_id

    def encode_word(self, word: str) -> list[int]:
        """Ids of ``"▁" + word`` (one whitespace-free word, SentencePiece dummy prefix added)."""
        symbols = list(SPACE + word)
        while len(symbols) > 1:
            best, best_score = -1, -np.inf
            for i in range(len(symbols) - 1):
                pid = self._ids.get(symbols[i] + symbols[i + 1])
                if pid is not None and self._scores[pid] > best_score:
                    best, best_score = i, self._scores[pid]
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        out: list[int] = []
        for s in symbols:
            if s in self._ids:
                out.append(self._ids[s])
            else:
                out.extend(self._ids.get(f"<0x{b:02X}>", self._unk) for b in s.encode("utf-8"))
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of a whitespace-separated text (no BOS/EOS)."""
        return [i for word in text.split() for i in self.encode_word(word)]


# ------------------------------------------------------------------------------------ word table
# Whole-word check: a system English word list (Debian/Ubuntu `wamerican`, macOS ships one too).
# SentencePiece scores alone rank fragments ("▁th", "▁wh", "▁interpre") and German/French words
# ("▁abgerufen", "▁mehr") among the first 3,000 "▁word" pieces of LLaMA-2.
DEFAULT_WORD_LISTS = ("/usr/share/dict/words", "/usr/share/dict/american-english")
WORD_LIST_HINT = ("install an English word list (Debian/Ubuntu: apt-get install wamerican) or pass "
                  "--word-list FILE (one word per line)")
# With a dictionary, one- and two-letter entries are mostly abbreviations ("ch", "esp"): keep only
# these common short words.
SHORT_WORDS = frozenset("a i am an as at be by do go he if in is it me my no of oh ok on or so to up us we".split())


def load_word_list(path: str | Path | None = None) -> frozenset[str]:
    """Lower-case ASCII words of an English word list (one per line), e.g. ``/usr/share/dict/words``.

    ``path=None`` takes the first of ``DEFAULT_WORD_LISTS`` that exists."""
    if path is None:
        path = next((p for p in DEFAULT_WORD_LISTS if Path(p).is_file()), None)
        if path is None:
            raise VocabError(f"no English word list found at {', '.join(DEFAULT_WORD_LISTS)}: {WORD_LIST_HINT}")
    path = Path(path)
    if not path.is_file():
        raise VocabError(f"word list {path} not found: {WORD_LIST_HINT}")
    words = frozenset(w for w in (line.strip() for line in path.read_text(errors="replace").splitlines())
                      if _WORD_RE.match(w))
    if not words:
        raise VocabError(f"word list {path} holds no lower-case ASCII words")
    return words


def word_candidates(vocab: LlmVocab, dictionary: frozenset[str] | None = None) -> np.ndarray:
    """Ids of NORMAL pieces ``"▁" + lower-case ASCII word``, ranked.

    Without ``dictionary``: length >= 2, or "a"/"i". With one: the word must be in it, and be at
    least 3 letters long or one of ``SHORT_WORDS``. Ranked by score descending (SentencePiece:
    higher = more frequent), ties by id ascending.
    """
    ids = []
    for i, piece in enumerate(vocab.pieces):
        if vocab.token_types[i] != TOKEN_NORMAL or not piece.startswith(SPACE):
            continue
        word = piece[1:]
        if not _WORD_RE.match(word):
            continue
        if dictionary is None:
            keep = len(word) >= 2 or word in _SINGLE_LETTER_WORDS
        else:
            keep = word in dictionary and (len(word) >= 3 or word in SHORT_WORDS)
        if keep:
            ids.append(i)
    ids_arr = np.asarray(ids, dtype=np.int64)
    order = np.lexsort((ids_arr, -vocab.scores[ids_arr].astype(np.float64)))
    return ids_arr[order]


def build_word_table(vocab: LlmVocab, size: int = 3000,
                     dictionary: frozenset[str] | None | str = "default") -> np.ndarray:
    """The layer-1 word table: ``(size,)`` int64 token ids, deterministic.

    Candidates from :func:`word_candidates` (``dictionary="default"`` loads the system English
    word list, ``None`` skips the whole-word check), keeping only words that SentencePiece-BPE
    encodes as that one token (so code <-> token id is a bijection), first ``size`` in rank order.
    """
    if size <= 0:
        raise ValueError(f"word table size must be positive, got {size}")
    if isinstance(dictionary, str):
        dictionary = load_word_list(None if dictionary == "default" else dictionary)
    bpe = SpmBpe(vocab)
    chosen: list[int] = []
    for tid in word_candidates(vocab, dictionary):
        if bpe.encode_word(vocab.pieces[tid][1:]) == [int(tid)]:
            chosen.append(int(tid))
            if len(chosen) == size:
                return np.asarray(chosen, dtype=np.int64)
    raise VocabError(f"the vocabulary has only {len(chosen)} single-token lower-case words"
                     f"{' in the word list' if dictionary is not None else ''}; asked for a word table of {size}")


RESIDUAL_TABLE_SIZE = 32000


def build_residual_table(vocab: LlmVocab, size: int = RESIDUAL_TABLE_SIZE) -> np.ndarray:
    """The layer-2+ token table: ``(N,)`` int64 distinct token ids, ascending, deterministic.

    Rule: a vocabulary of at most ``size`` ids is taken whole (``arange(V)``, code = id, as the paper
    does with LLaMA-2's 32,000). A larger one keeps its ``size`` NORMAL pieces (no control, byte,
    unused or user-defined ids) with the highest SentencePiece score (higher = merged earlier = more
    frequent; ties to the lower id), returned in id order.
    """
    if size <= 0:
        raise ValueError(f"residual table size must be positive, got {size}")
    if vocab.size <= size:
        return np.arange(vocab.size, dtype=np.int64)
    normal = np.flatnonzero(vocab.token_types == TOKEN_NORMAL).astype(np.int64)
    normal = normal[[len(vocab.pieces[i]) > 0 for i in normal]]
    if len(normal) < size:
        raise VocabError(f"the vocabulary has {vocab.size} ids but only {len(normal)} normal pieces; "
                         f"asked for a residual table of {size}")
    order = np.lexsort((normal, -vocab.scores[normal].astype(np.float64)))
    return np.sort(normal[order[:size]])


def word_table_words(vocab: LlmVocab, ids: np.ndarray | list[int]) -> list[str]:
    """The words (pieces without the leading "▁") of word-table ids."""
    return [vocab.pieces[int(i)].removeprefix(SPACE) for i in ids]


def make_vocab_info(vocab: LlmVocab, word_ids: np.ndarray, residual_ids: np.ndarray | None = None) -> dict:
    """The ``vocab.json`` record of a checkpoint (docs/design.md, codec/checkpoint.py).

    ``residual_ids`` defaults to :func:`build_residual_table` of ``vocab``."""
    if residual_ids is None:
        residual_ids = build_residual_table(vocab)
    return {
        "gguf": vocab.path.name if vocab.path else None,
        "gguf_sha256": file_sha256(vocab.path) if vocab.path else None,
        "fingerprint": vocab.fingerprint,
        "word_token_ids": [int(i) for i in word_ids],
        "residual_token_ids": [int(i) for i in residual_ids],
        "bos_id": int(vocab.bos_id),
        "eos_id": int(vocab.eos_id),
        "vocab_size": vocab.size,
        "llm_dim": vocab.dim,
    }
