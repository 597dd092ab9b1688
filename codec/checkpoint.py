"""Codec checkpoints: a directory with ``config.json``, ``model.safetensors`` and ``vocab.json``.

``model.safetensors`` holds the whole state dict: trainable weights (weight-normed or folded) and the
frozen codebook rows the model was trained with (``quantizer.word_codebook``, ``quantizer.vocab_codebook``),
so a checkpoint decodes without the GGUF. ``vocab.json`` ties the codes to the LLM's vocabulary
(``fingerprint``, ``word_token_ids``, plus ``gguf``, ``gguf_sha256``, ``bos_id``, ``eos_id`` when known).
"""
from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codec.config import CodecConfig
from codec.model import LLMCodec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
REQUIRED_VOCAB_KEYS = ("fingerprint", "word_token_ids")
_CODEBOOK_KEYS = ("quantizer.word_codebook", "quantizer.vocab_codebook")


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent."""


def save_checkpoint(directory: str | Path, model: LLMCodec, vocab_info: dict[str, Any],
                    overwrite: bool = False) -> Path:
    """Write ``model`` and ``vocab_info`` to ``directory`` (created if needed); returns the directory.

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
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"preset": model.cfg.preset}))
    _atomic(directory / CONFIG_FILE, model.cfg.save)
    _atomic(directory / VOCAB_FILE, lambda p: p.write_text(json.dumps(vocab_info, indent=2) + "\n"))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[LLMCodec, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` -> ``(model in eval mode, vocab_info)``."""
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
    if missing:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} lacks the codebook tensors {missing}")
    try:
        model = LLMCodec(cfg, tensors[_CODEBOOK_KEYS[0]], tensors[_CODEBOOK_KEYS[1]])
    except ValueError as err:
        raise CheckpointError(f"codebooks in {WEIGHTS_FILE} do not match {CONFIG_FILE}: {err}") from err
    if not any(k.endswith("parametrizations.weight.original0") for k in tensors):
        model.fold_weight_norm()  # saved after fold_weight_norm(): plain `weight` keys
    _load_state(model, tensors, directory / WEIGHTS_FILE)
    return model.to(device).eval(), vocab_info


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


def _check_vocab_info(info: Any, cfg: CodecConfig, where: str) -> None:
    if not isinstance(info, dict):
        raise CheckpointError(f"{where} must be a JSON object, got {type(info).__name__}")
    missing = [k for k in REQUIRED_VOCAB_KEYS if k not in info]
    if missing:
        raise CheckpointError(f"{where} lacks {missing} (see docs/design.md, codec/checkpoint.py)")
    ids = info["word_token_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CheckpointError(f"{where}: word_token_ids must be a list of ints (LLM token ids)")
    if len(ids) != cfg.word_table_size:
        raise CheckpointError(f"{where}: {len(ids)} word_token_ids but word_table_size is {cfg.word_table_size}")
    if len(set(ids)) != len(ids) or any(not 0 <= i < cfg.vocab_size for i in ids):
        raise CheckpointError(f"{where}: word_token_ids must be distinct token ids in [0, {cfg.vocab_size})")


def _normalise_ids(info: Any) -> Any:
    """Accept numpy arrays / numpy ints for ``word_token_ids`` (JSON needs plain ints)."""
    if isinstance(info, dict) and "word_token_ids" in info:
        try:
            ids = [operator.index(i) for i in list(info["word_token_ids"])]
        except TypeError:
            return info  # reported by _check_vocab_info
        return {**info, "word_token_ids": ids}
    return info


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # a second Ctrl-C mid-save: no stray temp file either
        tmp.unlink(missing_ok=True)
        raise
