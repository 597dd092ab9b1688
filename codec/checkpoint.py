"""Codec checkpoints: a directory with ``config.json``, ``model.safetensors`` and ``vocab.json``.

``model.safetensors`` holds the whole state dict: trainable weights (weight-normed or folded) and the
frozen codebook rows the model was trained with (``quantizer.word_codebook``, ``quantizer.vocab_codebook``),
so a checkpoint decodes without the GGUF. ``vocab.json`` ties the codes to the LLM's vocabulary
(``fingerprint``, ``word_token_ids``, ``residual_token_ids``, plus ``gguf``, ``gguf_sha256``, ``bos_id``,
``eos_id``, ``vocab_size`` (the LLM's) when known). Checkpoints written before ``residual_token_ids`` existed
used the whole vocabulary for layers 2+ (code = id): :func:`layer_token_ids` reads them so.

A *weights-only* checkpoint (``save_checkpoint(..., codebooks=False)``, what the repository ships in
``models/default/checkpoint/``) leaves the frozen codebook rows out (90 MB for Gemma's 640-d table);
:func:`load_checkpoint` then rebuilds them from the LLM GGUF (``llm=``), whose sha256 must match
``vocab.json``'s ``gguf_sha256`` (the same vocabulary at another quantisation has other embeddings).
"""
from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codec.config import CodecConfig
from runtime.cli import atomic_path
from codec.model import LLMCodec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
REQUIRED_VOCAB_KEYS = ("fingerprint", "word_token_ids")
_CODEBOOK_KEYS = ("quantizer.word_codebook", "quantizer.vocab_codebook")


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent."""


def save_checkpoint(directory: str | Path, model: LLMCodec, vocab_info: dict[str, Any],
                    overwrite: bool = False, codebooks: bool = True) -> Path:
    """Write ``model`` and ``vocab_info`` to ``directory`` (created if needed); returns the directory.

    ``codebooks=False`` leaves the frozen codebook rows out (weights only; needs ``gguf_sha256``).

    Refuses to replace an existing checkpoint unless ``overwrite``. Each file is written to a temporary
    name and renamed, so an interrupted save never leaves a half-written file under the real name.
    """
    directory = Path(directory)
    vocab_info = _normalise_ids(vocab_info)
    _check_vocab_info(vocab_info, model.cfg, "vocab_info")
    existing = [n for n in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE) if (directory / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{directory} already holds {existing}; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    if not codebooks and not vocab_info.get("gguf_sha256"):
        raise CheckpointError("a weights-only checkpoint needs vocab_info['gguf_sha256'] to find its codebooks again")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
               if codebooks or k not in _CODEBOOK_KEYS}
    _atomic(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"preset": model.cfg.preset}))
    _atomic(directory / CONFIG_FILE, model.cfg.save)
    _atomic(directory / VOCAB_FILE, lambda p: p.write_text(json.dumps(vocab_info, indent=2) + "\n"))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    llm: str | Path | None = None) -> tuple[LLMCodec, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` -> ``(model in eval mode, vocab_info)``.

    ``llm``: the GGUF to rebuild the codebooks of a weights-only checkpoint from (ignored otherwise)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} lacks {name} (expected {CONFIG_FILE}, "
                                    f"{WEIGHTS_FILE} and {VOCAB_FILE})")
    try:
        cfg = CodecConfig.load(directory / CONFIG_FILE)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid CodecConfig: {err}") from err
    vocab_info = _read_json(directory / VOCAB_FILE)
    _check_vocab_info(vocab_info, cfg, str(directory / VOCAB_FILE))
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    missing = [k for k in _CODEBOOK_KEYS if k not in tensors]
    if len(missing) == len(_CODEBOOK_KEYS):
        tensors.update(codebooks_from_llm(llm, vocab_info, cfg, directory))
    elif missing:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} lacks the codebook tensors {missing}")
    try:
        model = LLMCodec(cfg, tensors[_CODEBOOK_KEYS[0]], tensors[_CODEBOOK_KEYS[1]])
    except ValueError as err:
        raise CheckpointError(f"codebooks in {WEIGHTS_FILE} do not match {CONFIG_FILE}: {err}") from err
    if not any(k.endswith("parametrizations.weight.original0") for k in tensors):
        model.fold_weight_norm()  # saved after fold_weight_norm(): plain `weight` keys
    _load_state(model, tensors, directory / WEIGHTS_FILE)
    return model.to(device).eval(), vocab_info


def codebooks_from_llm(llm: str | Path | None, vocab_info: dict[str, Any], cfg: CodecConfig,
                       directory: Path) -> dict[str, torch.Tensor]:
    """The frozen codebook tensors of a weights-only checkpoint, gathered from the LLM's embedding table."""
    from codec.vocab import VocabError, file_sha256, load_vocab

    want = vocab_info.get("gguf_sha256")
    name = vocab_info.get("gguf") or "the LLM GGUF"
    if llm is None:
        raise CheckpointError(f"{directory} is a weights-only checkpoint (no codebook rows): pass the LLM it was "
                              f"trained against ({name}, sha256 {want}), e.g. --llm models/default/llm.gguf")
    if want and file_sha256(llm) != want:
        raise CheckpointError(f"{llm} is not the GGUF {directory} was trained against ({name}, sha256 {want}); "
                              "its embedding table would give other codebooks")
    try:
        vocab = load_vocab(llm)
    except VocabError as err:
        raise CheckpointError(str(err)) from err
    if vocab.fingerprint != vocab_info["fingerprint"] or vocab.embeddings is None:
        raise CheckpointError(f"{llm} has another vocabulary than {directory} (or no token embeddings)")
    words, residual = layer_token_ids(vocab_info, cfg)[:2]
    return {_CODEBOOK_KEYS[0]: torch.from_numpy(vocab.embeddings[words]),
            _CODEBOOK_KEYS[1]: torch.from_numpy(vocab.embeddings[residual])}


def _load_state(model: LLMCodec, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit config.json: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                              f" ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    bad = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
           if tuple(tensors[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{path} has tensors whose shapes do not fit config.json: {bad[:5]}")
    model.load_state_dict(tensors, strict=True)


def layer_token_ids(info: dict[str, Any], cfg: CodecConfig) -> list[list[int]]:
    """The LLM token ids of each RVQ layer's codebook (code ``i`` <-> ``ids[i]``), layer 1 first."""
    residual = info.get("residual_token_ids")
    if residual is None:  # pre-table checkpoints: layers 2+ were the whole vocabulary
        residual = list(range(cfg.vocab_size))
    return [list(info["word_token_ids"])] + [list(residual)] * (len(cfg.vq_strides) - 1)


def _check_ids(ids: Any, n: int, llm_size: int, name: str, where: str, size_field: str) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CheckpointError(f"{where}: {name} must be a list of ints (LLM token ids)")
    if len(ids) != n:
        raise CheckpointError(f"{where}: {len(ids)} {name} but {size_field} is {n}")
    if len(set(ids)) != len(ids) or any(not 0 <= i < llm_size for i in ids):
        raise CheckpointError(f"{where}: {name} must be distinct token ids in [0, {llm_size})")


def _check_vocab_info(info: Any, cfg: CodecConfig, where: str) -> None:
    if not isinstance(info, dict):
        raise CheckpointError(f"{where} must be a JSON object, got {type(info).__name__}")
    missing = [k for k in REQUIRED_VOCAB_KEYS if k not in info]
    if missing:
        raise CheckpointError(f"{where} lacks {missing} (see docs/design.md, codec/checkpoint.py)")
    llm_size = info.get("vocab_size") or cfg.vocab_size
    if not isinstance(llm_size, int) or llm_size < cfg.vocab_size:
        raise CheckpointError(f"{where}: vocab_size {llm_size!r} is smaller than the residual codebook "
                              f"({cfg.vocab_size} entries)")
    _check_ids(info["word_token_ids"], cfg.word_table_size, llm_size, "word_token_ids", where, "word_table_size")
    if "residual_token_ids" in info:
        _check_ids(info["residual_token_ids"], cfg.vocab_size, llm_size, "residual_token_ids", where, "vocab_size")
    elif llm_size != cfg.vocab_size:
        raise CheckpointError(f"{where} lacks residual_token_ids, required when the LLM vocabulary "
                              f"({llm_size}) is larger than the residual codebook ({cfg.vocab_size})")


def _normalise_ids(info: Any) -> Any:
    """Accept numpy arrays / numpy ints for the token-id lists (JSON needs plain ints)."""
    if not isinstance(info, dict):
        return info
    out = dict(info)
    for key in ("word_token_ids", "residual_token_ids"):
        if key in info:
            try:
                out[key] = [operator.index(i) for i in list(info[key])]
            except TypeError:
                pass  # reported by _check_vocab_info
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def _atomic(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:  # the project's one atomic write (runtime/cli.py)
        write(tmp)
