"""The one place the thread environment is set: import this module before numpy / llama.cpp load.

llama.cpp and onnxruntime bring their own threads. OpenBLAS threads on top (the numpy codeword
search) oversubscribe the cores (measured up to 70x slower, kernels/cpu.py), and llama.cpp's spinning
OpenMP workers were measured 15-300x slower per token on a busy 2-core machine once scipy was loaded;
passive waiting fixes both. ``setdefault``: a user's own settings win.

    import runtime.threads  # noqa: F401  (first import of a CLI entry point)
"""
from __future__ import annotations

import os

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}


def configure() -> dict[str, str]:
    """Set the defaults of ``THREAD_ENV`` that are not already set; returns the effective values."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in THREAD_ENV}


configure()
