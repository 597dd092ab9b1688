"""benchmarks.vq_gain: per-layer coding statistics, and what a gain refit does to them."""
from __future__ import annotations

import pytest
import torch

from benchmarks.vq_gain import layer_stats
from codec.quantizer import MultiScaleRVQ
from helpers_codec import random_tables, tiny_config


@torch.no_grad()
def test_layer_stats_see_short_rows_and_the_refit_fixes_them() -> None:
    cfg = tiny_config()
    rvq = MultiScaleRVQ(cfg, *random_tables(cfg))
    for proj in rvq.cb_proj:
        proj.weight.mul_(0.2)
        proj.bias.mul_(0.2)
    z = torch.randn(2, cfg.latent_dim, 32, generator=torch.Generator().manual_seed(0)) * 3
    before = layer_stats(rvq, z)
    assert [s["layer"] for s in before] == [1, 2, 3]
    assert all(s["ls_gain"] > 1.5 and s["length_ratio"] < 1 for s in before)
    rvq.match_gains(z, limit=100.0)
    rvq.match_gains(z, limit=100.0)
    after = layer_stats(rvq, z)
    assert after[-1]["residual_fraction"] < before[-1]["residual_fraction"]
    assert [s["ls_gain"] for s in after] == pytest.approx([1.0, 1.0, 1.0], abs=0.05)
