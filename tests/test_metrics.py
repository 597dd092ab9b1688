"""Quality metrics on real speech: identity scores perfectly, more noise scores worse."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.audio import read_audio
from runtime.metrics import mel_distance, si_sdr, speech_metrics

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech16k" / "arctic_a0010.wav"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH, 16000)


def test_mel_distance_zero_on_identity_and_grows_with_noise(speech):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(speech)).astype(np.float32)
    d = [mel_distance(speech, speech + a * noise) for a in (0.0, 0.003, 0.03)]
    assert d[0] == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < d[1] < d[2]


def test_speech_metrics_rank_clean_above_noisy(speech):
    rng = np.random.default_rng(1)
    noisy = speech + 0.05 * rng.standard_normal(len(speech)).astype(np.float32)
    clean = speech_metrics(speech, speech)
    bad = speech_metrics(speech, noisy)
    assert clean["pesq_wb"] > 4.0 and clean["stoi"] > 0.99
    assert bad["pesq_wb"] < clean["pesq_wb"] and bad["stoi"] < clean["stoi"]
    assert si_sdr(speech, noisy) < si_sdr(speech, 0.5 * speech)  # scale-invariant: a gain is free
