"""Shared fixtures. Bigger builders live in ``tests/helpers_codec.py``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make tests/helpers_*.py importable


@pytest.fixture(scope="module")
def tiny_codec():
    """A seeded tiny codec (random weights, non-trivial Snake alphas, W=50 / V=300 / D=64), eval mode."""
    torch = pytest.importorskip("torch")
    from helpers_codec import make_codec

    torch.manual_seed(0)
    return make_codec(seed=0)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's small torch ops on one thread: on a shared 2-core box, two spinning intra-op
    threads per process make tiny convs ~40x slower under load."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
