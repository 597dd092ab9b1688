"""The paper's consistency teacher: Whisper base's encoder (CTranslate2) on real speech crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.whisper_base import available

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH = [DATA / "speech16k" / "arctic_a0010.wav", DATA / "speech16k" / "cmu_arctic_us_aew_a0001.wav"]
needs_whisper = [pytest.mark.skipif(not all(p.is_file() for p in SPEECH), reason=f"shared data missing: {SPEECH}"),
                 pytest.mark.skipif(bool(available()), reason=str(available()))]
N = 17280  # a training crop: 1 s rounded up to whole code groups


@pytest.fixture(scope="module")
def teacher():
    from codec.teacher import get_teacher

    return get_teacher("whisper")


def _crops() -> torch.Tensor:
    from runtime.audio import read_audio

    clips = [read_audio(p, 16000)[8000:8000 + N] for p in SPEECH]
    return torch.from_numpy(np.stack(clips).astype(np.float32))[:, None]


@needs_whisper[0]
@needs_whisper[1]
def test_whisper_frames_have_the_documented_shape_and_scale(teacher):
    wav = _crops()
    f = teacher(wav)
    assert f.shape == (2, N // 320, 512) and f.dtype == torch.float32 and not f.requires_grad
    assert teacher.dim == 512 and teacher.frame_rate == 50.0
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f.mean(1), torch.zeros(2, 512), atol=1e-4, rtol=0)  # standardised per clip


@needs_whisper[0]
@needs_whisper[1]
def test_whisper_frames_depend_on_the_crop_alone_and_on_what_is_said(teacher):
    wav = _crops()
    both = teacher(wav)
    alone = teacher(wav[1:])
    torch.testing.assert_close(both[1:], alone, atol=0.05, rtol=0)  # int8 GEMMs: batch-independent up to rounding
    noisy = teacher(wav + 0.003 * torch.randn_like(wav, generator=torch.Generator().manual_seed(0)))

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    # the same words under faint noise stay close; another sentence does not
    assert corr(both[0], noisy[0]) > 0.8
    assert corr(both[0], both[1]) < corr(both[0], noisy[0]) - 0.3


def test_a_missing_whisper_is_a_one_line_install_hint(monkeypatch):
    import runtime.whisper_base as wb
    from codec.teacher import WhisperTeacher

    monkeypatch.setattr(wb, "available", lambda: "faster-whisper is not installed (pip install ...)")
    with pytest.raises(ImportError, match="--teacher whisper: faster-whisper is not installed"):
        WhisperTeacher()
