"""Shared fixtures. Bigger builders live in ``tests/helpers_codec.py``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# llama.cpp's OpenMP workers busy-wait and OpenBLAS spawns a thread per core: on a 2-core CI box the
# two fight each other and few-shot runs get 20-70x slower. Set before numpy / llama.cpp load.
import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

# CLI runs inside tests write their caches (prefix KV states, the assembled Whisper model) here, not into
# the user's ~/.cache; one directory per pytest process so runs stay independent.
if "LLMCODEC_CACHE" not in os.environ:
    import tempfile

    os.environ["LLMCODEC_CACHE"] = tempfile.mkdtemp(prefix="llmcodec-test-cache-")
# Triton's interpreter must be chosen before triton itself is first imported (torch._dynamo pulls it
# in): with no NVIDIA device the Triton tests run on the CPU under TRITON_INTERPRET=1.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests check results, not speed: a cut-down Triton autotune space (kernels/nearest.py) keeps a cold
# cache on a GPU within minutes.
os.environ.setdefault("LLMCODEC_AUTOTUNE", "quick")

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
