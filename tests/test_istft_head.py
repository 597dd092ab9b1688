"""The inverse-STFT decoder head (codec.modules.istft): exact inverse DFT, config rules, warm start."""
from __future__ import annotations

import pytest
import torch

from codec.config import CodecConfig, preset
from codec.modules.istft import InverseDFT, inverse_dft_kernel
from codec.training.warm import _load_shared
from helpers_codec import make_codec, sample_audio

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize(("hop", "overlap"), [(60, 4), (15, 4), (60, 16)])
@torch.no_grad()
def test_inverse_dft_inverts_a_hann_stft(hop: int, overlap: int) -> None:
    """Frames of torch.stft (periodic Hann, frame j at sample j·hop) overlap-added by InverseDFT give the
    signal back wherever `overlap` frames overlap (the first n_fft - hop samples only fade in)."""
    n_fft = overlap * hop
    x = sample_audio(0.25, seed=4)[0, 0].double()
    spec = torch.stft(x, n_fft, hop, n_fft, torch.hann_window(n_fft, dtype=torch.float64), center=False,
                      return_complex=True)  # (F, L)
    frames = torch.cat([spec.real, spec.imag]).unsqueeze(0).float()  # (1, 2F, L)
    y = InverseDFT(n_fft, hop)(frames)[0, 0]
    assert y.shape[-1] == frames.shape[-1] * hop
    lo, hi = n_fft - hop, y.shape[-1]
    assert torch.allclose(y[lo:hi], x[lo:hi].float(), atol=1e-5)
    assert float(y[:hop].abs().max()) < float(x[:hop].abs().max())  # the fade-in: not yet `overlap` frames


def test_inverse_dft_kernel_is_fixed_under_training() -> None:
    model = make_codec(decoder_head="istft")
    idft = model.decoder.head.idft
    assert not any(p.requires_grad for p in idft.parameters())
    assert torch.equal(idft.conv.weight, inverse_dft_kernel(idft.conv.kernel_size[0], idft.stride))


def test_head_config_rules() -> None:
    cfg = preset("small", decoder_head="istft")
    assert cfg.head_hop == 60 and CodecConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in preset("small").to_dict().items() if k not in ("decoder_head", "head_blocks", "head_dim")}
    assert CodecConfig.from_dict(old).decoder_head == "conv"  # configs saved before the field existed
    with pytest.raises(ValueError, match="decoder_head"):
        preset("small", decoder_head="vocos")
    with pytest.raises(ValueError, match="head_blocks"):
        preset("small", decoder_head="istft", head_blocks=4)


@torch.no_grad()
def test_istft_head_decodes_at_every_head_depth() -> None:
    z = torch.randn(1, 16, 5)
    for blocks in range(4):
        model = make_codec(decoder_head="istft", head_blocks=blocks)
        assert model.decoder(z).shape == (1, 1, 5 * 480)


@torch.no_grad()
def test_warm_start_of_a_new_head_keeps_encoder_quantizer_and_early_stages() -> None:
    conv = make_codec(seed=1)
    istft = make_codec(seed=2, decoder_head="istft")
    note = _load_shared(conv.state_dict(), istft)
    assert "decoder.head" in note
    mine, theirs = istft.state_dict(), conv.state_dict()
    for key in mine:
        if key.startswith(("encoder.", "quantizer.", "decoder.block1.", "decoder.conv_in.")):
            assert torch.equal(mine[key], theirs[key]), key
    x = sample_audio(0.48, seed=3)
    for a, b in zip(istft.encode(x), conv.encode(x)):
        assert torch.equal(a, b)  # the same tokens: only the way back to audio is new


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy (TorchScript) exporter
@pytest.mark.parametrize("head", ["istft", "harmonic"])
def test_spectral_head_codecs_export_self_verified_and_stream_torch_free(tmp_path, head: str) -> None:
    """The new heads need nothing new downstream: export verifies them against torch, and the torch-free
    session's streamed decode equals its offline decode and torch's (the harmonic head's float64 phase state
    travels through the manifest like any other)."""
    pytest.importorskip("onnxruntime")
    from export_fixtures import build_tiny_checkpoint, real_speech

    from codec.checkpoint import load_checkpoint
    from export.compare import snr_db
    from export.onnx import export_bundle
    from runtime.codec import CodecSession
    from tolerances import TOLERANCES

    build_tiny_checkpoint(tmp_path / "ckpt", decoder_head=head)
    export_bundle(tmp_path / "ckpt", tmp_path / "bundle", log=lambda line: None)
    session = CodecSession(tmp_path / "bundle", provider="cpu", threads=1)
    speech = real_speech(seconds=1.0)
    codes = session.encode(speech)
    groups = [[layer[g * n:(g + 1) * n] for layer, n in zip(codes, (1, 2, 4))] for g in range(len(codes[0]))]
    offline = session.decode(codes)
    streamed = session.new_stream().decode(groups)
    assert snr_db(offline, streamed) >= TOLERANCES["audio_runtime_stream_vs_runtime_offline"].min_snr_db
    model, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        ref = model.eval().decode([torch.as_tensor(c)[None].long() for c in codes])[0, 0].numpy()
    assert snr_db(ref[: len(offline)], offline) >= TOLERANCES["codec_ort_cpu_vs_torch"].min_snr_db
