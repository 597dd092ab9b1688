"""codec.pitch: YIN per latent frame (causal windows) and the pitch loss."""
from __future__ import annotations

import math

import torch

from codec.pitch import F0_REF, PitchHead, pitch_loss, yin


def _tone(f0: float, seconds: float = 0.48) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds), dtype=torch.float64) / 16000
    return 0.5 * torch.sin(2 * math.pi * f0 * t) + 0.2 * torch.sin(2 * math.pi * 2 * f0 * t)


def test_yin_is_causal_per_frame_and_batched() -> None:
    wav = torch.stack([_tone(120.0), torch.zeros(7680, dtype=torch.float64)])
    f0, voiced = yin(wav, 16)
    assert f0.shape == voiced.shape == (2, 16)
    assert voiced[0, 1:].all() and not voiced[1].any() and (f0[1] == 0).all()
    assert torch.allclose(f0[0, 1:], torch.full((15,), 120.0), rtol=0.01)
    late = wav.clone()
    late[0, 480 * 8:] = 0  # frames < 8 read samples < 480·8 only
    f0_late, _ = yin(late, 16)
    assert torch.equal(f0_late[0, :8], f0[0, :8])


def test_pitch_loss_is_low_for_the_right_answer_and_trains_a_head() -> None:
    wav = _tone(200.0).float()[None, None]
    right = torch.zeros(1, 16, 2)
    right[..., 0] = math.log(200.0 / F0_REF)
    right[..., 1] = 20.0
    right[0, 0, 1] = -20.0  # the first window is mostly the zero padding before the clip: unvoiced
    wrong = torch.zeros(1, 16, 2)
    assert float(pitch_loss(right, wav)) < 0.1 < float(pitch_loss(wrong, wav))
    head = PitchHead(4)
    zq = torch.randn(1, 4, 16, requires_grad=True)
    pitch_loss(head(zq), wav).backward()
    assert head.proj.weight.grad is not None and zq.grad is not None and float(zq.grad.abs().sum()) > 0
