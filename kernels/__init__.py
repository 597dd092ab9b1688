"""Nearest-codeword search for the codec's frozen LLM codebooks.

``nearest_codeword`` and ``rvq_step`` dispatch on the input type: numpy arrays take the numpy
path (``kernels.cpu``: BLAS, no torch), CUDA torch tensors take Triton (``kernels.nearest`` /
``kernels.rvq``), CPU torch tensors take the torch reference. Importing this package imports
neither torch nor triton; the torch-side modules are loaded on first use.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from .cpu import NumpyNearest, NumpyRvq, nearest_codeword_np, rvq_step_np

__all__ = ["nearest_codeword", "rvq_step", "gpu_search_available", "NumpyNearest", "NumpyRvq", "nearest_codeword_np",
           "rvq_step_np", "BACKENDS"]

BACKENDS = ("auto", "numpy", "triton", "torch")


def _is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is already imported
    return torch is not None and isinstance(x, torch.Tensor)


def _pick_backend(x: Any, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if _is_torch_tensor(x):
        return "triton" if x.device.type == "cuda" else "torch"
    return "numpy"


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().float().numpy() if _is_torch_tensor(x) else x


def gpu_search_available() -> str | None:
    """None if the Triton search can run here (torch with CUDA, triton), else why not (one line).

    Imports torch only when called: the runtime asks on its GPU providers only."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install '.[kernels]' and a CUDA torch)"
    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def nearest_codeword(queries: Any, codebook: Any, backend: str = "auto") -> tuple[Any, Any]:
    """Cosine nearest codeword: ``argmax_n <normalize(q_m), c_n>``, lowest index on ties.

    queries ``(M, D)``, codebook ``(N, D)`` L2-normalised (fp16/bf16/fp32). Returns
    ``idx (M,) int64`` and ``score (M,) float32`` as numpy arrays (numpy backend) or tensors.
    backend: ``auto`` (numpy arrays -> numpy, CUDA tensors -> triton, CPU tensors -> torch),
    ``numpy``, ``triton`` (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``) or ``torch``.
    """
    which = _pick_backend(queries, backend)
    if which == "numpy":
        return nearest_codeword_np(_to_numpy(queries), _to_numpy(codebook))
    from . import nearest  # lazy: torch + triton

    if which == "triton":
        return nearest.nearest_codeword_triton(queries, codebook)
    return nearest.nearest_codeword_reference(queries, codebook)


def rvq_step(latent: Any, tables: Sequence[tuple[Any, Any]], strides: Sequence[int] = (4, 2, 1),
             backend: str = "auto") -> tuple[list[Any], Any]:
    """Multi-scale residual quantisation of complete groups.

    latent ``(T, D)`` or ``(B, T, D)`` with T a multiple of ``strides[0]``; tables: one
    ``(rows (N_l, D), normed (N_l, D))`` pair per layer. Returns codes (one int64 array/tensor
    per layer, ``(.., T / stride_l)``) and the quantised latent (float32, latent's shape).
    For repeated per-group calls build ``NumpyRvq`` / ``kernels.rvq.TritonRvq`` once instead.
    """
    which = _pick_backend(latent, backend)
    if which == "numpy":
        return rvq_step_np(_to_numpy(latent), [(_to_numpy(r), _to_numpy(n)) for r, n in tables], strides)
    from . import rvq  # lazy: torch + triton

    if which == "triton":
        return rvq.rvq_step_triton(latent, tables, strides)
    return rvq.rvq_step_reference(latent, tables, strides)
