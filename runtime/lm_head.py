"""Audio-head GGUFs: the frozen LLM with its output head cut down to the ids a prompt can need.

Why: Gemma 3's tied output head has 262,144 rows, 178 MB of Q8_0 read for every logits row, about
half of a decoding step on a CPU (`benchmarks.llm_head_cost`). Masked audio decoding only ever
compares the logits of the codec's token tables (32k ids), so an output head over those ids plus
the prompt's text ids gives the *same* masked argmax and the same masked sampling distribution,
with a head about 7x smaller. Nothing else changes: every other tensor is copied byte for byte
and the kept rows of ``token_embd.weight`` (input embeddings and tied head alike) and of an
untied ``output.weight`` keep their quantised bytes, in ascending id order, so ties still break
towards the lowest original id. The kept logits are bit-identical on the default Gemma 3 head
(Q8_0, measured); on f32 heads llama.cpp tiles the matmul by its row count, so they differ in the
last bits (tolerance table row ``llm_audio_head_vs_full_logits``).

The file is an ordinary GGUF of the same architecture whose vocabulary is the kept pieces
(local id ``j`` is original id ``source_ids[j]``), plus metadata naming its source:

    llmcodec.head.source_ids          uint32 array, local -> original id (ascending)
    llmcodec.head.source_file         the full GGUF's file name (tokenizer: text is encoded by
                                      the full vocabulary, then mapped, so prompts are identical)
    llmcodec.head.source_sha256       its sha256 (checked when the runtime opens both)
    llmcodec.head.source_fingerprint  its vocabulary fingerprint (`runtime.vocab`)

`runtime.lm.FrozenLM` opens such a file transparently: ids stay original ids everywhere, logits
rows come back full-width with ``-inf`` at dropped ids. What it cannot do is what needs the whole
softmax (label scoring) or a text id outside the kept set; both raise `HeadVocabularyError`.

Kept ids: the bundle's token tables; every control (except ``<unusedN>``), byte, unknown and
user-defined piece; single printable ASCII characters with and without the "▁" prefix; the ids of
the templates' and demonstration sets' text (``--text``/``--demos``).

CLI: ``python -m runtime.lm_head --model models/default/llm.gguf --codec models/default/codec
--demos models/default/demos/* --out models/default/llm.audio-head.gguf`` (``make models`` runs it).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from runtime.lm_errors import HeadVocabularyError

__all__ = ["HEAD_KEYS", "HeadVocabularyError", "HeadInfo", "HeadMap", "head_path", "read_head_info",
           "head_ids", "write_head_gguf", "main"]

HEAD_KEYS = {"ids": "llmcodec.head.source_ids", "file": "llmcodec.head.source_file",
             "sha256": "llmcodec.head.source_sha256", "fingerprint": "llmcodec.head.source_fingerprint"}
VOCAB_TENSORS = ("token_embd.weight", "output.weight")  # rows = vocabulary ids (an untied head has both)
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
_UNUSED = re.compile(r"^<unused\d+>$")
_NORMAL, _UNKNOWN, _CONTROL, _USER, _BYTE = 1, 2, 3, 4, 6  # gguf.TokenType values
_SPACE = "\u2581"


class HeadInfo:
    """What an audio-head GGUF says about its source: ``source_ids`` (K,) int64 ascending, file
    name, sha256 and vocabulary fingerprint of the full GGUF."""

    def __init__(self, source_ids: np.ndarray, source_file: str, source_sha256: str, source_fingerprint: str):
        self.source_ids = np.asarray(source_ids, dtype=np.int64)
        self.source_file, self.source_sha256, self.source_fingerprint = source_file, source_sha256, source_fingerprint


def _field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def read_head_info(path: str | Path) -> HeadInfo | None:
    """The `HeadInfo` of an audio-head GGUF, None for an ordinary GGUF (reads the header only)."""
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    ids = _field(reader, HEAD_KEYS["ids"])
    if ids is None:
        return None
    return HeadInfo(np.asarray(ids, dtype=np.int64), str(_field(reader, HEAD_KEYS["file"])),
                    str(_field(reader, HEAD_KEYS["sha256"])), str(_field(reader, HEAD_KEYS["fingerprint"])))


class HeadMap:
    """Original <-> local ids of an opened audio-head GGUF, and its source's tokenizer.

    ``global_ids`` (K,) local -> original; ``local_ids`` (V,) original -> local or -1; ``vocab`` the
    source GGUF's `runtime.lm_model.VocabOnly` (V = its size). Opening checks that the source file
    is the one the head was cut from (sha256, memoised) and that every kept piece is the source's."""

    def __init__(self, path: Path, info: HeadInfo, head_pieces: Sequence[bytes]) -> None:
        from runtime.lm_model import ModelLoadError, open_vocab
        from runtime.prefix_cache import model_sha256

        source = path.parent / info.source_file
        fix = "rebuild it with `python -m runtime.lm_head` (or `make models` for the defaults)"
        if not source.is_file():
            raise ModelLoadError(f"{path} is an audio-head GGUF of {source}, which is missing: put the full "
                                 f"model beside it or {fix}")
        if model_sha256(source) != info.source_sha256:
            raise ModelLoadError(f"{path} was cut from another {info.source_file} (sha256 differs): {fix}")
        self.vocab = open_vocab(source)
        self.n_vocab = self.vocab.n_vocab
        self.global_ids = info.source_ids
        if len(head_pieces) != self.global_ids.size or self.global_ids[-1] >= self.n_vocab:
            raise ModelLoadError(f"{path}: its id map does not fit its vocabulary: {fix}")
        if any(self.vocab.piece_bytes(int(g)) != b for g, b in zip(self.global_ids, head_pieces)):
            raise ModelLoadError(f"{path}: its pieces are not {source}'s at the mapped ids: {fix}")
        self.local_ids = np.full(self.n_vocab, -1, dtype=np.int64)
        self.local_ids[self.global_ids] = np.arange(self.global_ids.size)
        self.kept = self.local_ids >= 0

    def to_local(self, ids: Sequence[int]) -> np.ndarray:
        """Local ids of original ``ids``; raises `HeadVocabularyError` naming dropped pieces."""
        a = np.asarray(ids, dtype=np.int64)
        loc = self.local_ids[a]
        if np.any(loc < 0):
            bad = sorted(set(a[loc < 0].tolist()))[:5]
            pieces = [self.vocab.piece_bytes(i).decode("utf-8", errors="replace") for i in bad]
            raise HeadVocabularyError(
                f"the audio-head GGUF does not keep token ids {bad} (pieces {pieces}): this prompt needs "
                "the full model (pass the full GGUF, e.g. --head full)")
        return loc

    def widen(self, row: np.ndarray) -> np.ndarray:
        """A local logits row (K,) as an original-width row (V,) with -inf at the dropped ids."""
        out = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        out[self.global_ids] = row
        return out

    def allows(self, mask: np.ndarray) -> bool:
        """Whether ``mask`` (V,) allows kept ids only: then the masked choice is the full model's."""
        return not bool(np.any(np.asarray(mask, dtype=bool) & ~self.kept))

    def check_mask(self, mask: np.ndarray | None) -> None:
        """Raise `HeadVocabularyError` unless `allows` ``mask`` (None, unmasked, never is)."""
        if mask is None:
            raise HeadVocabularyError("unmasked decoding needs the whole softmax: use the full GGUF, not an "
                                      "audio-head GGUF")
        if not self.allows(mask):
            raise HeadVocabularyError("the allowed ids include ids the audio-head GGUF dropped: use the full "
                                      "GGUF or rebuild the head for this codec bundle")


def head_path(model: str | Path) -> Path:
    """Where the audio head of ``model`` lives: ``<stem>.audio-head.gguf`` beside it."""
    m = Path(model)
    return m.with_name(m.stem + ".audio-head.gguf")


def _always_kept(pieces: Sequence[str], types: np.ndarray) -> np.ndarray:
    """Specials, bytes, user-defined pieces and single ASCII characters (bool (V,))."""
    keep = np.isin(types, (_UNKNOWN, _CONTROL, _USER, _BYTE))
    for i, p in enumerate(pieces):
        if types[i] == _CONTROL and _UNUSED.match(p):
            keep[i] = False
        elif types[i] == _NORMAL and len(p.removeprefix(_SPACE)) <= 1 and p.removeprefix(_SPACE).isascii():
            keep[i] = True
    return keep


def head_ids(pieces: Sequence[str], token_types: np.ndarray, tables: Iterable[np.ndarray],
             text_ids: Iterable[int] = (), special_ids: Iterable[int] = ()) -> np.ndarray:
    """The ascending original ids an audio head keeps: (K,) int64.

    pieces/token_types: the full vocabulary (V entries); tables: the codec's per-layer token-id
    tables; text_ids: ids of the prompt text the head must read; special_ids: BOS/EOS/PAD/UNK."""
    keep = _always_kept(pieces, np.asarray(token_types))
    for ids in (*tables, np.fromiter(text_ids, dtype=np.int64), np.fromiter(special_ids, dtype=np.int64)):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(pieces)):
            raise ValueError(f"token ids outside the vocabulary of {len(pieces)} pieces")
        keep[ids] = True
    return np.flatnonzero(keep).astype(np.int64)


def _remapped_special(name: str, value: int, local_of: dict[int, int]) -> int | None:
    if value not in local_of:
        if name in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            raise ValueError(f"{name} {value} is not among the kept ids")
        return None  # an optional special the head does not keep (dropped from the metadata)
    return local_of[value]


def write_head_gguf(src: str | Path, dst: str | Path, keep: np.ndarray, progress: bool = True) -> Path:
    """Write the audio-head GGUF of ``src`` keeping the ascending original ids ``keep`` (K,).

    Atomic (a temporary file renamed into place). Returns ``dst``."""
    import gguf
    from tqdm import tqdm

    from runtime.bundle import sha256_file
    from runtime.vocab import gguf_fingerprint

    src, dst = Path(src), Path(dst)
    keep = np.asarray(keep, dtype=np.int64)
    if keep.size == 0 or np.any(np.diff(keep) <= 0):
        raise ValueError("keep must be a non-empty ascending list of distinct ids")
    reader = gguf.GGUFReader(str(src), "r")
    if reader.fields.get(HEAD_KEYS["ids"]) is not None:
        raise ValueError(f"{src} is already an audio-head GGUF: prune the full model")
    arch = str(_field(reader, "general.architecture"))
    local_of = {int(g): j for j, g in enumerate(keep)}
    tmp = dst.with_name(dst.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch, endianess=reader.endianess)
    _copy_metadata(reader, writer, keep, local_of)
    writer.add_key_value(HEAD_KEYS["ids"], keep.astype(np.uint32).tolist(), gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.UINT32)
    writer.add_key_value(HEAD_KEYS["file"], src.name, gguf.GGUFValueType.STRING)
    writer.add_key_value(HEAD_KEYS["sha256"], sha256_file(src).removeprefix("sha256:"), gguf.GGUFValueType.STRING)
    writer.add_key_value(HEAD_KEYS["fingerprint"], gguf_fingerprint(src), gguf.GGUFValueType.STRING)
    datas = []
    for t in reader.tensors:
        data = t.data
        if t.name in VOCAB_TENSORS:
            if data.shape[0] <= int(keep[-1]):
                raise ValueError(f"{t.name} has {data.shape[0]} rows, fewer than the kept ids need")
            data = np.ascontiguousarray(data[keep])
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, t.tensor_type)
        datas.append(data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with tqdm(total=sum(d.nbytes for d in datas), unit="B", unit_scale=True, desc="audio head",
              disable=not progress) as bar:
        for d in datas:
            writer.write_tensor_data(d, tensor_endianess=reader.endianess)
            bar.update(d.nbytes)
    writer.close()
    tmp.replace(dst)
    return dst


def _copy_metadata(reader, writer, keep: np.ndarray, local_of: dict[int, int]) -> None:
    """Every key but the GGUF's own, with the tokenizer arrays cut to ``keep`` and special ids remapped."""
    import gguf

    for field in reader.fields.values():
        name = field.name
        if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if name in _TOKENIZER_ARRAYS:
            value = [value[i] for i in keep.tolist()]
        elif name.startswith("tokenizer.ggml.") and name.endswith("_token_id"):
            value = _remapped_special(name, int(value), local_of)
            if value is None:
                continue
        elif name.endswith(".vocab_size"):
            value = int(keep.size)
        elif name == "general.name":
            value = f"{value} (audio head, {keep.size} ids)"
        writer.add_key_value(name, value, val_type, sub_type=sub_type)


def _template_texts(texts: Sequence[str] = ()) -> list[str]:
    """Every fixed text of the prompts: the templates (`runtime.prompt.Template`, with each of
    ``texts`` put into the text-input slot, as prompts encode it) and the tasks' instructions."""
    from dataclasses import fields

    from runtime import prompt
    from runtime.prompt import Template
    from runtime.tasks import denoise, text2sound, tts

    t = Template()
    out = [str(getattr(t, f.name)).replace("{text}", "") for f in fields(t)]
    out += [t.text_input.format(text=x) for x in texts]
    for module in (prompt, denoise, text2sound, tts):
        out += [v for k, v in vars(module).items() if "INSTRUCTION" in k and isinstance(v, str)]
    return out


def _demo_texts(demo_dirs: Sequence[Path]) -> list[str]:
    """The text of demonstration sets: labels, transcripts, captions (every string of their JSON
    files, every cell of their CSV manifests, every line of their ``*.txt`` files)."""
    out: list[str] = []

    def strings(x) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                strings(k)
                strings(v)
        elif isinstance(x, list):
            for v in x:
                strings(v)

    for d in demo_dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.suffix == ".json":
                strings(json.loads(p.read_text()))
            elif p.suffix == ".csv":
                with open(p, newline="") as f:
                    out += [cell for row in csv.reader(f) for cell in row]
            elif p.suffix == ".txt":
                out += p.read_text().splitlines()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the audio-head GGUF of a model for a codec bundle."""
    from runtime.cli import fatal
    from runtime.codec import CodecSession
    from runtime.lm_model import ModelLoadError, open_vocab
    from runtime.vocab import gguf_fingerprint

    ap = argparse.ArgumentParser(prog="python -m runtime.lm_head", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the full GGUF the codec was built for")
    ap.add_argument("--codec", type=Path, required=True, help="codec bundle (its token tables are kept)")
    ap.add_argument("--demos", type=Path, nargs="*", default=[], help="demonstration set folders whose text is kept")
    ap.add_argument("--text", nargs="*", default=[], help="more prompt text to keep")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        codec = CodecSession(a.codec)
        if gguf_fingerprint(a.model) != codec.fingerprint:
            return fatal(f"{a.model} is not the LLM the codec bundle {a.codec} was built for (vocabulary mismatch)")
        vocab = open_vocab(a.model)
        extra = _demo_texts(a.demos) + list(a.text)
        texts = _template_texts(extra) + extra
        text_ids = [i for s in texts for i in vocab.tokenize(s)]
        keep = head_ids(vocab.pieces(), vocab.token_types(), codec.token_tables, text_ids, vocab.special_ids())
        write_head_gguf(a.model, a.out, keep, progress=not a.no_progress)
    except (ModelLoadError, ValueError, OSError) as e:
        return fatal(str(e))
    print(f"wrote {a.out}: output head {keep.size} of {vocab.n_vocab} rows "
          f"({keep.size / vocab.n_vocab:.1%}), {a.out.stat().st_size / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_cli

    raise SystemExit(run_cli(main))
