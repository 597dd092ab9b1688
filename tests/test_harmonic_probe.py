"""benchmarks.harmonic_probe on the tiny harmonic codec: branch levels, voicing and F0 error per head frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.harmonic_probe import markdown, probe_file, summarise
from helpers_codec import make_codec

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_probe_measures_what_the_head_outputs() -> None:
    model = make_codec(seed=4, decoder_head="harmonic")
    t = np.arange(9600) / 16000
    tone = 0.4 * np.sin(2 * np.pi * 150 * t) + 0.2 * np.sin(2 * np.pi * 300 * t)  # voiced for YIN
    part = probe_file(model, tone)
    frames = 5 * 1920 // 60  # padded to whole groups
    assert all(len(v) == frames for v in part.values())
    assert part["voiced"][10:150].all()
    with torch.no_grad():
        audio, pitch = model.decoder.forward_with_pitch(
            model.quantizer.quantize(model.encoder(model.pad_audio(torch.tensor(tone, dtype=torch.float32)[None, None])))[0])
    assert np.allclose(part["voicing"], torch.sigmoid(pitch[0, :, 1]).numpy(), atol=1e-6)
    s = summarise([part, part])
    assert s["frames"] == 2 * frames and s["voiced_frames"] == 2 * int(part["voiced"].sum())
    assert -60 < s["harmonic_db_voiced"] < 20 and np.isfinite(s["noise_db_voiced"])
    assert 0 <= s["f0_within_50_cents"] <= 1 and s["f0_median_cents"] >= 0
    assert "median error" in markdown("tiny", s)
