"""The harmonic-plus-noise decoder head (codec.modules.harmonic): oscillators, streaming, warm start, F0 path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.config import preset
from codec.modules.harmonic import HarmonicSynth
from codec.pitch import pitch_loss
from codec.training.warm import _load_shared
from codec.model import LLMCodec
from helpers_codec import make_codec, random_tables, sample_audio, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RATE, HOP = 16000, 60


def _frames(f0: float, amps: list[float], count: int) -> torch.Tensor:
    """``(1, 1 + K, count)`` constant frames: F0 in Hz, then the harmonic amplitudes."""
    return torch.tensor([f0] + amps)[None, :, None].repeat(1, 1, count)


def _peak(y: np.ndarray, hz: float) -> float:
    """Amplitude of the sinusoid at ``hz`` in ``y`` (whole number of periods in the window)."""
    spec = np.abs(np.fft.rfft(y)) * 2 / len(y)
    return float(spec[int(round(hz * len(y) / RATE))])


@torch.no_grad()
def test_oscillators_play_the_harmonics_they_are_given() -> None:
    synth = HarmonicSynth(4, HOP, RATE)
    y = synth(_frames(200.0, [0.3, 0.0, 0.1, 0.0], 60))[0, 0].numpy()  # 0.225 s
    steady = y[HOP:HOP + 3200]  # after the first frame's fade-in from silence: 40 periods of 200 Hz
    assert _peak(steady, 200) == pytest.approx(0.3, abs=1e-3)
    assert _peak(steady, 600) == pytest.approx(0.1, abs=1e-3)
    assert _peak(steady, 400) < 1e-3 and _peak(steady, 800) < 1e-3
    assert np.abs(y[:HOP]).max() <= 0.4  # interpolated up from the silent initial state, no click


@torch.no_grad()
def test_harmonics_above_nyquist_are_silenced() -> None:
    synth = HarmonicSynth(4, HOP, RATE)
    y = synth(_frames(3000.0, [0.1, 0.1, 0.1, 0.1], 60))[0, 0].numpy()[HOP:HOP + 3200]
    assert _peak(y, 3000) == pytest.approx(0.1, abs=1e-3) and _peak(y, 6000) == pytest.approx(0.1, abs=1e-3)
    # 9 and 12 kHz cannot exist at 16 kHz: left in, they would alias to 7 and 4 kHz.
    assert _peak(y, 7000) < 1e-3 and _peak(y, 4000) < 1e-3


@torch.no_grad()
def test_synth_stream_equals_offline_over_a_long_gliding_tone() -> None:
    """A 4-second glide: the float64 phase carried as state keeps every chunking on the offline waveform."""
    count = 4 * RATE // HOP
    frames = _frames(0.0, [0.2] * 8, count)
    frames[0, 0] = torch.linspace(90.0, 340.0, count)
    synth = HarmonicSynth(8, HOP, RATE)
    offline = synth(frames)
    state, outs, start = synth.init_state(1), [], 0
    for size in [1, 7, 30, 2, 200, 3] * 200:
        if start >= count:
            break
        y, *state = synth.step(frames[..., start:start + size], *state)
        outs.append(y)
        start += size
    assert torch.allclose(torch.cat(outs, dim=-1), offline, atol=1e-5, rtol=0)


@torch.no_grad()
def test_warm_start_from_an_istft_head_keeps_it_and_starts_the_oscillators_quiet() -> None:
    istft = make_codec(seed=2, decoder_head="istft")
    cfg = tiny_config(decoder_head="harmonic")
    torch.manual_seed(5)
    harmonic = LLMCodec(cfg, *random_tables(cfg, seed=2)).eval()  # a fresh harmonic head, as codec.train builds
    note = _load_shared(istft.state_dict(), harmonic)
    assert "fresh: decoder.head;" in note and note.endswith("dropped: )")  # nothing of the istft codec is lost
    mine, theirs = harmonic.state_dict(), istft.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    x = sample_audio(0.96, seed=3)
    before, after = istft(x).audio, harmonic(x).audio
    diff = float((after - before).pow(2).mean().sqrt())
    assert 0 < diff < 0.03  # the oscillators are there, 40+ dB down, and learn from there


def test_f0_reaches_the_oscillators_detached_and_learns_from_the_f0_loss() -> None:
    model = make_codec(seed=4, decoder_head="harmonic").train()
    wav = 0.5 * torch.sin(2 * torch.pi * 200 * torch.arange(7680) / RATE)[None, None]  # voiced for YIN
    bias = model.decoder.head.harmonic.conv.bias
    out = model(wav)
    (grad_audio,) = torch.autograd.grad(out.audio.pow(2).sum(), bias, retain_graph=True)
    assert grad_audio[0] == 0  # log F0: no gradient through the running phase
    assert grad_audio[2:].abs().sum() > 0  # harmonic amplitudes do learn from the audio
    (grad_pitch,) = torch.autograd.grad(pitch_loss(out.pitch, wav, out.pitch_hop), bias)
    assert grad_pitch[0] != 0 and grad_pitch[1] != 0
    assert out.pitch.shape == (1, 4 * 1920 // 60, 2) and out.pitch_hop == 60


@torch.no_grad()
def test_teacher_f0_replaces_the_predicted_one_where_positive() -> None:
    model = make_codec(seed=4, decoder_head="harmonic")
    wav = sample_audio(0.48, seed=6)
    frames = 4 * 1920 // 60
    base = model(wav).audio
    assert torch.equal(model(wav, torch.zeros(1, frames)).audio, base)
    assert not torch.equal(model(wav, torch.full((1, frames), 220.0)).audio, base)
    other = make_codec(seed=4, decoder_head="istft")
    assert torch.equal(other(wav, torch.full((1, frames), 220.0)).audio, other(wav).audio)  # ignored there


def test_harmonic_config_rules() -> None:
    cfg = preset("small", decoder_head="harmonic")
    assert cfg.harmonics == 64 and cfg.head_hop == 60
    with pytest.raises(ValueError, match="harmonics"):
        preset("small", decoder_head="harmonic", harmonics=0)
    with pytest.raises(ValueError, match="head_blocks"):
        preset("small", decoder_head="harmonic", head_blocks=4)
