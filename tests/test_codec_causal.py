"""Causality, lengths and rates of the causal LLM-Codec (tiny preset, CPU)."""
from __future__ import annotations

import pytest
import torch

from codec.config import preset
from codec.model import LLMCodec
from helpers_codec import make_codec, sample_audio
from tolerances import TOLERANCES

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HOP = 480
ATOL = 1e-5
# A harmonic head's oscillators integrate F0: float rounding drifts their phase (see the tolerance row).
OSC_ATOL = TOLERANCES["audio_oscillator_torch_stream_vs_torch_offline"].atol


def _audio_atol(codec: LLMCodec) -> float:
    return OSC_ATOL if codec.cfg.decoder_head == "harmonic" else ATOL

ALPHAS = [pytest.param(("ones", "conv"), id="snake-alpha-ones"),
          pytest.param(("random", "conv"), id="snake-alpha-random"),
          pytest.param(("random", "istft"), id="istft-head"),
          pytest.param(("random", "harmonic"), id="harmonic-head")]


@pytest.fixture(scope="module", params=ALPHAS)
def codec(request) -> LLMCodec:
    alpha, head = request.param
    return make_codec(seed=3, snake_alpha=alpha, decoder_head=head)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@torch.no_grad()
def test_encoder_future_input_never_changes_past_latents(codec: LLMCodec) -> None:
    x = sample_audio(1.2, batch=2)
    full = codec.encoder(x)
    for frames in (1, 5, 17):
        prefix = codec.encoder(x[..., : frames * HOP])
        assert prefix.shape[-1] == frames
        assert _max_diff(prefix, full[..., :frames]) < ATOL
    # A loud change confined to samples >= 10 hops leaves frames 0..9 untouched and moves frame 10.
    y = x.clone()
    y[..., 10 * HOP:] += torch.randn_like(y[..., 10 * HOP:])
    moved = codec.encoder(y)
    assert _max_diff(moved[..., :10], full[..., :10]) < ATOL
    assert _max_diff(moved[..., 10], full[..., 10]) > 1e-3


@torch.no_grad()
def test_latent_frame_depends_on_the_last_sample_of_its_hop(codec: LLMCodec) -> None:
    """Frame t reads sample (t+1)*hop - 1 (one hop of latency, not less)."""
    x = sample_audio(0.6)
    base = codec.encoder(x)
    y = x.clone()
    y[..., 4 * HOP - 1] += 5.0
    moved = codec.encoder(y)
    assert _max_diff(moved[..., :3], base[..., :3]) < 1e-6
    assert _max_diff(moved[..., 3], base[..., 3]) > 1e-4


@torch.no_grad()
def test_codes_of_earlier_groups_never_change(codec: LLMCodec) -> None:
    x = sample_audio(1.44, batch=2, seed=1)  # 48 frames = 12 groups
    full = codec.encode(x)
    group = codec.group_samples
    for groups in (1, 4, 7):
        part = codec.encode(x[..., : groups * group])
        for layer, (a, b) in enumerate(zip(part, full)):
            assert a.shape[-1] == groups * (1, 2, 4)[layer]
            assert torch.equal(a, b[..., : a.shape[-1]])
    y = x.clone()
    y[..., 6 * group:] = -y[..., 6 * group:]
    changed = codec.encode(y)
    for layer, (a, b) in enumerate(zip(changed, full)):
        cut = 6 * (1, 2, 4)[layer]
        assert torch.equal(a[..., :cut], b[..., :cut])
    assert any(not torch.equal(a, b) for a, b in zip(changed, full))


@torch.no_grad()
def test_decoder_future_latents_never_change_past_audio(codec: LLMCodec) -> None:
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, codec.cfg.latent_dim, 24, generator=gen)
    full = codec.decoder(z)
    assert full.shape == (2, 1, 24 * HOP)
    for frames in (1, 6, 13):
        assert _max_diff(codec.decoder(z[..., :frames]), full[..., : frames * HOP]) < _audio_atol(codec)
    z2 = z.clone()
    z2[..., 9:] = torch.randn(2, codec.cfg.latent_dim, 15, generator=gen)
    moved = codec.decoder(z2)
    assert _max_diff(moved[..., : 9 * HOP], full[..., : 9 * HOP]) < _audio_atol(codec)
    # Frame 9 is heard from its own first sample on: the decoder adds no latency.
    assert _max_diff(moved[..., 9 * HOP: 9 * HOP + 8], full[..., 9 * HOP: 9 * HOP + 8]) > 1e-6


@torch.no_grad()
def test_end_to_end_reconstruction_is_causal_per_group(codec: LLMCodec) -> None:
    x = sample_audio(0.96, seed=2)  # 8 groups
    full = codec(x).audio
    half = codec(x[..., : 4 * codec.group_samples]).audio
    assert _max_diff(half, full[..., : half.shape[-1]]) < _audio_atol(codec)


@pytest.mark.parametrize("samples,frames", [
    pytest.param(HOP, 1, id="one-hop"),
    pytest.param(7 * HOP, 7, id="seven-hops"),
    pytest.param(7 * HOP + 479, 7, id="ragged-tail-floored"),
])
@torch.no_grad()
def test_encoder_and_decoder_lengths(tiny_codec: LLMCodec, samples: int, frames: int) -> None:
    z = tiny_codec.encoder(torch.zeros(1, 1, samples))
    assert z.shape == (1, tiny_codec.cfg.latent_dim, frames)
    assert tiny_codec.decoder(z).shape == (1, 1, frames * HOP)


@torch.no_grad()
def test_forward_pads_to_groups_and_trims_audio(tiny_codec: LLMCodec) -> None:
    x = sample_audio(0.5, batch=2)  # 8000 samples -> ceil(8000 / 1920) = 5 groups
    out = tiny_codec(x)
    assert out.audio.shape == x.shape
    assert [c.shape for c in out.codes] == [(2, 5), (2, 10), (2, 20)]
    assert out.z.shape == out.zq.shape == (2, tiny_codec.cfg.latent_dim, 20)
    assert all(q.shape == out.z.shape for q in out.per_layer_zq)
    assert torch.allclose(sum(out.per_layer_zq), out.zq, atol=1e-6)
    assert tiny_codec.decode(out.codes).shape == (2, 1, 20 * HOP)


@torch.no_grad()
def test_token_rate_is_58_and_a_third_per_second(tiny_codec: LLMCodec) -> None:
    seconds = 12
    codes = tiny_codec.encode(sample_audio(seconds))
    assert [c.shape[-1] for c in codes] == [100, 200, 400]
    total = sum(c.numel() for c in codes)
    assert total == 700
    assert total == pytest.approx(tiny_codec.cfg.tokens_per_second * seconds)
    assert tiny_codec.cfg.tokens_per_second == pytest.approx(58 + 1 / 3)


@pytest.mark.parametrize("shape,match", [
    pytest.param((1, 2, 4800), "mono", id="stereo"),
    pytest.param((4800,), "mono", id="no-batch-axis"),
    pytest.param((1, 1, 0), "empty", id="empty"),
])
def test_bad_audio_is_rejected_clearly(tiny_codec: LLMCodec, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_codec.encode(torch.zeros(shape))


def test_encoder_rejects_audio_shorter_than_a_hop(tiny_codec: LLMCodec) -> None:
    with pytest.raises(ValueError, match="shorter than one hop"):
        tiny_codec.encoder(torch.zeros(1, 1, HOP - 1))


@torch.no_grad()
def test_fold_weight_norm_keeps_outputs() -> None:
    model = make_codec(seed=4)
    x = sample_audio(0.48, batch=2, seed=4)
    before = model(x)
    assert model.fold_weight_norm() > 0
    assert not any("parametrizations" in k for k in model.state_dict())
    after = model(x)
    assert _max_diff(before.z, after.z) < 1e-5
    assert _max_diff(before.audio, after.audio) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(before.codes, after.codes))


def test_paper_preset_matches_the_official_parameter_counts() -> None:
    """Encoder as released (3,839,392); decoder = released 35,957,282 minus the 4 NoiseBlocks (784,800).

    Counts from official-llm-codec.md §0.1 (measured on the official modules); tiny codebooks keep it fast.
    """
    cfg = preset("paper", word_table_size=4, vocab_size=4)
    model = LLMCodec(cfg, torch.zeros(4, cfg.llm_dim), torch.zeros(4, cfg.llm_dim))
    counts = model.parameter_counts()
    noise_blocks = sum(c * c + c for c in (768, 384, 192, 96))
    assert counts["encoder"] == 3_839_392
    assert counts["decoder"] == 35_957_282 - noise_blocks
    assert counts["cb_proj"] == 6_292_992
    assert counts["trainable"] == counts["encoder"] + counts["decoder"] + counts["cb_proj"]
    assert counts["frozen"] == 8 * 4096
