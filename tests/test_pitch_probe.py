"""benchmarks.pitch_probe: the YIN tracker, the probe's R² and the kept-pitch counts on known signals."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.pitch_probe import pitch_kept, ridge_r2, track


@pytest.mark.parametrize("f0", [80.0, 150.0, 220.0, 350.0])
def test_yin_finds_the_pitch_of_a_harmonic_tone_and_not_of_noise(f0: float) -> None:
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * 2 * f0 * t)
    found = track(tone, 30)
    cents = 1200 * np.abs(np.log2(found[1:] / f0))
    assert np.all(cents < 50), found
    noise = np.random.default_rng(0).standard_normal(16000) * 0.3
    assert np.isnan(track(noise, 30)).all()
    assert np.isnan(track(np.zeros(16000), 30)).all()


def test_probe_r2_separates_informative_from_useless_features() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(5, 0.3, 400)
    useful = np.column_stack([y + rng.normal(0, 0.02, 400), rng.normal(size=(400, 3))])
    useless = rng.normal(size=(400, 4))
    assert ridge_r2(useful[:200], y[:200], useful[200:], y[200:]) > 0.9
    assert ridge_r2(useless[:200], y[:200], useless[200:], y[200:]) < 0.1


def test_pitch_kept_counts_voiced_and_close_frames() -> None:
    ref = np.array([100.0, 100.0, 100.0, np.nan, 200.0])
    out = np.array([101.0, 110.0, np.nan, 100.0, 200.0])  # 17 cents, 165 cents, unvoiced, (ref unvoiced), exact
    assert pitch_kept(ref, out) == (4, 3, 2)
