"""Checkpoint directories: round trip (weight-normed and folded) and clear errors for broken ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from codec.model import LLMCodec
from helpers_codec import make_codec, sample_audio

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _vocab_info(model: LLMCodec) -> dict:
    ids = np.arange(model.cfg.word_table_size, dtype=np.int64) * 5 + 3  # numpy ids are accepted
    return {"gguf": "tiny.gguf", "gguf_sha256": "0" * 64, "fingerprint": "sha256:" + "ab" * 32,
            "word_token_ids": ids, "bos_id": 1, "eos_id": 2}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, LLMCodec]:
    model = make_codec(seed=21)
    directory = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "run1", model, _vocab_info(model))
    return directory, model


@pytest.mark.parametrize("fold", [pytest.param(False, id="weight-norm"), pytest.param(True, id="folded")])
@torch.no_grad()
def test_round_trip_reproduces_the_model(tmp_path: Path, fold: bool) -> None:
    model = make_codec(seed=22)
    if fold:
        model.fold_weight_norm()
    save_checkpoint(tmp_path / "ck", model, _vocab_info(model))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert not loaded.training
    assert loaded.cfg == model.cfg
    assert info["word_token_ids"] == [int(i) for i in _vocab_info(model)["word_token_ids"]]
    assert info["fingerprint"] == _vocab_info(model)["fingerprint"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = sample_audio(0.48, batch=2, seed=22)
    a, b = model(x), loaded(x)
    assert torch.equal(a.audio, b.audio)
    assert all(torch.equal(p, q) for p, q in zip(a.codes, b.codes))


def test_existing_checkpoint_is_not_overwritten(saved) -> None:
    directory, model = saved
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(directory, model, _vocab_info(model))
    save_checkpoint(directory, model, _vocab_info(model), overwrite=True)
    assert not list(directory.glob("*.tmp"))


def _copy(saved, tmp_path: Path) -> Path:
    directory, _ = saved
    out = tmp_path / "copy"
    out.mkdir(parents=True)
    for f in directory.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_missing_directory_and_files(saved, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    for name in ("config.json", "model.safetensors", "vocab.json"):
        broken = _copy(saved, tmp_path / name)
        (broken / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"lacks {name}"):
            load_checkpoint(broken)


@pytest.mark.parametrize("edit,match", [
    pytest.param(lambda cfg: {**cfg, "latent_dim": 24}, "shapes do not fit", id="config-latent-dim"),
    pytest.param(lambda cfg: {**cfg, "vocab_size": 299}, "do not match|word_token_ids", id="config-vocab-size"),
    pytest.param(lambda cfg: {**cfg, "bogus": 1}, "not a valid CodecConfig", id="config-unknown-field"),
    pytest.param(lambda cfg: {**cfg, "decoder_dim": 64}, "shapes do not fit", id="config-decoder-dim"),
])
def test_config_that_does_not_fit_the_weights(saved, tmp_path: Path, edit, match: str) -> None:
    broken = _copy(saved, tmp_path)
    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(broken)


@pytest.mark.parametrize("vocab,match", [
    pytest.param("{not json", "not valid JSON", id="corrupt-json"),
    pytest.param(json.dumps({"word_token_ids": list(range(50))}), r"lacks \['fingerprint'\]", id="no-fingerprint"),
    pytest.param(json.dumps({"fingerprint": "x", "word_token_ids": list(range(49))}), "49 word_token_ids",
                 id="wrong-word-count"),
    pytest.param(json.dumps({"fingerprint": "x", "word_token_ids": [0] * 50}), "distinct", id="duplicate-ids"),
])
def test_bad_vocab_json(saved, tmp_path: Path, vocab: str, match: str) -> None:
    broken = _copy(saved, tmp_path)
    (broken / "vocab.json").write_text(vocab)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(broken)


def test_corrupt_weights(saved, tmp_path: Path) -> None:
    broken = _copy(saved, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(broken)


def test_save_validates_vocab_info(tmp_path: Path) -> None:
    model = make_codec(seed=23)
    with pytest.raises(CheckpointError, match="word_token_ids"):
        save_checkpoint(tmp_path / "x", model, {"fingerprint": "x"})
    assert not (tmp_path / "x").exists()
