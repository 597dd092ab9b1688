"""Shared builders for the export/runtime tests: a tiny seeded codec checkpoint and its bundle.

The bundle is exported once per test session (module-level cache keyed by the pytest tmp factory),
because the export itself (trace + golden + ORT verification) is the slowest part of these tests.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TINY_W, TINY_V, TINY_D = 50, 300, 64
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def tiny_vocab_info(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pieces = [f"tok{i}" for i in range(TINY_V)]
    h = hashlib.sha256()
    for p in pieces:
        b = p.encode()
        h.update(len(b).to_bytes(4, "little") + b)
    return {"gguf": "tiny-test.gguf", "gguf_sha256": "sha256:" + "0" * 64, "fingerprint": "sha256:" + h.hexdigest(),
            "word_token_ids": sorted(int(i) for i in rng.choice(np.arange(3, TINY_V), TINY_W, replace=False)),
            "bos_id": 1, "eos_id": 2}


def build_tiny_checkpoint(directory: Path, seed: int = 0, preset: str = "tiny", **overrides: Any) -> Path:
    """A ``tiny`` LLMCodec with seeded random weights and codebooks (W=50, V=300, D=64), saved."""
    import torch

    from codec.checkpoint import save_checkpoint
    from codec.config import preset as make_preset
    from codec.model import LLMCodec

    cfg = make_preset(preset, llm_dim=TINY_D, vocab_size=TINY_V, word_table_size=TINY_W, **overrides)
    torch.manual_seed(seed)
    vocab = torch.randn(TINY_V, TINY_D)
    info = tiny_vocab_info(seed)
    model = LLMCodec(cfg, vocab[info["word_token_ids"]], vocab)
    _randomise_snake(model, seed)
    if cfg.decoder_head == "harmonic":
        from helpers_codec import audible_harmonics

        audible_harmonics(model, seed + 2)
    save_checkpoint(directory, model.eval(), info)
    return directory


def _randomise_snake(model: Any, seed: int) -> None:
    """Snake alphas start at 1.0; spread them so the graphs are not accidentally symmetric."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


def real_speech(rate: int = 16000, seconds: float = 1.5) -> np.ndarray:
    """A real 16 kHz speech recording, cut to ``seconds`` (from ../shared/data/speech16k)."""
    import soundfile as sf

    files = sorted((DATA / "speech16k").rglob("*.wav"))
    data, sr = sf.read(str(files[0]), dtype="float32", always_2d=True)
    assert sr == rate, f"{files[0]} is {sr} Hz"
    return np.ascontiguousarray(data[: int(rate * seconds), 0])


_EXPORTED: dict[str, Path] = {}


def tiny_export(tmp_path_factory: Any) -> Path:
    """Directory holding ``ckpt/`` (tiny checkpoint) and ``bundle/`` (its verified export), built once
    per pytest process and shared by every test module that asks."""
    if "tiny" not in _EXPORTED:
        from export.onnx import export_bundle

        root = tmp_path_factory.mktemp("tiny_export")
        build_tiny_checkpoint(root / "ckpt")
        export_bundle(root / "ckpt", root / "bundle", log=lambda line: None)
        _EXPORTED["tiny"] = root
    return _EXPORTED["tiny"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: Any) -> Path:
    """The shared tiny bundle (``tiny_export``), for modules that import this fixture."""
    return tiny_export(tmp_path_factory) / "bundle"


@pytest.fixture(scope="module")
def session(bundle: Path) -> Any:
    """A one-thread CPU ``CodecSession`` over :func:`bundle`."""
    from runtime.codec import CodecSession

    return CodecSession(bundle, provider="cpu", threads=1)
