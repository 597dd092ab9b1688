"""benchmarks.envelope_probe: band groups, per-band R² and the no-fit envelope score on known signals."""
from __future__ import annotations

import numpy as np

from benchmarks.envelope_probe import GROUPS, N_MELS, band_centres, by_group, kept_r2, log_mel, r2_columns
from benchmarks.pitch_probe import ridge_predict, ridge_r2


def _tone(freq: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_band_centres_rise_and_every_group_has_bands() -> None:
    c = band_centres()
    assert c.shape == (N_MELS,) and np.all(np.diff(c) >= 0) and c[0] < 100 and c[-1] > 7000
    for lo, hi in GROUPS.values():
        assert ((c >= lo) & (c < hi)).sum() >= 5


def test_log_mel_puts_a_tone_in_its_own_band_group() -> None:
    c = band_centres()
    for freq, group in ((500.0, "0-1 kHz"), (2500.0, "1-4 kHz"), (6000.0, "4-8 kHz")):
        mel = log_mel(_tone(freq))
        assert mel.shape[1] == N_MELS and abs(len(mel) - 16000 // 480) <= 1
        lo, hi = GROUPS[group]
        assert lo <= c[int(mel[5:-5].mean(0).argmax())] < hi


def test_r2_columns_is_one_for_a_copy_and_negative_for_a_shuffle() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 4))
    assert np.allclose(r2_columns(y, y), 1.0)
    assert np.all(r2_columns(y[::-1].copy() * 2, y) < 0)
    assert by_group(np.arange(N_MELS, dtype=float), band_centres())["0-1 kHz"] < 40


def test_multi_output_ridge_matches_one_column_at_a_time() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6))
    y = np.column_stack([x[:, 0] * 2 + rng.normal(0, 0.05, 400), rng.normal(size=400)])
    pred = ridge_predict(x[:200], y[:200], x[200:])
    r2 = r2_columns(pred, y[200:])
    assert r2[0] > 0.95 and r2[1] < 0.1
    assert np.isclose(r2[0], ridge_r2(x[:200], y[:200, 0], x[200:], y[200:, 0]), atol=1e-3)


def test_kept_r2_prefers_the_same_envelope_over_another() -> None:
    rng = np.random.default_rng(3)
    speechy = np.concatenate([_tone(f, 0.25) for f in (300, 900, 2500, 5000, 700, 3000)])
    speechy = speechy + rng.normal(0, 0.01, len(speechy)).astype(np.float32)
    other = np.roll(speechy, 8000)
    same = kept_r2([(speechy, speechy * 0.999)], band_centres())
    wrong = kept_r2([(speechy, other)], band_centres())
    assert all(same[g] > 0.99 for g in GROUPS)
    assert all(wrong[g] < same[g] - 0.5 for g in GROUPS)
