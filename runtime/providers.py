"""onnxruntime execution providers of the codec runtime: the one place their lists and options live.

The project has ONE TensorRT path: onnxruntime's TensorRT execution provider over the bundle's own
ONNX graphs, with its engine cache (and timing cache) in ``<bundle>/trt_cache`` when that folder is
writable, else under the user cache. ``python -m export.tensorrt BUNDLE`` builds that cache ahead of
time and checks the engines on the golden pairs; ``CodecSession(provider="tensorrt")`` then loads
the cached engines instead of building them at first use. TensorRT's own API (which changed between
10 and 11: strongly typed networks, no FP16 builder flag) is never called directly; fp16 is
onnxruntime's ``trt_fp16_enable``. Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
TRT_CACHE_DIR = "trt_cache"
# What `ort.get_available_providers()` lacks -> how to get it (one line each).
INSTALL_HINTS = {
    "CPUExecutionProvider": "pip install onnxruntime",
    "CUDAExecutionProvider": "pip install onnxruntime-gpu (matching your CUDA) in place of onnxruntime",
    "TensorrtExecutionProvider": "pip install onnxruntime-gpu and TensorRT's libraries (pip install tensorrt-cu12 "
                                 "or the tar package) so onnxruntime can load libnvinfer",
}


def trt_cache_dir(bundle_path: Path, bundle_id: str) -> Path:
    """Where the TensorRT engines of a bundle live: ``<bundle>/trt_cache`` if it exists or can be
    created there, else ``<user cache>/trt/<bundle id>`` (read-only installs)."""
    local = bundle_path / TRT_CACHE_DIR
    if local.is_dir() and os.access(local, os.W_OK):
        return local
    if not local.exists() and os.access(bundle_path, os.W_OK):
        return local
    from runtime.prefix_cache import default_cache_dir  # the project's one cache root ($LLMCODEC_CACHE)

    return default_cache_dir() / "trt" / bundle_id.replace("sha256:", "")[:32]


def trt_options(cache: Path, fp16: bool) -> dict[str, Any]:
    """onnxruntime TensorRT EP options: engine + timing cache in ``cache``, fp16 when asked.

    The step graphs have fixed shapes, so no optimisation profiles are needed; the engine cache is
    keyed by onnxruntime on the graph, the TensorRT version and the GPU, and rebuilt when they differ."""
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": bool(fp16), "trt_max_workspace_size": 1 << 30}


def provider_list(provider: str, trt: dict[str, Any] | None = None) -> list[Any]:
    """The providers argument of ``ort.InferenceSession`` for ``provider`` (cpu/cuda/tensorrt)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose one of {sorted(PROVIDERS)}")
    names = PROVIDERS[provider]
    if provider == "tensorrt":
        return [("TensorrtExecutionProvider", trt or {}), *names[1:]]
    return list(names)


def missing_provider(provider: str, available: list[str]) -> str | None:
    """None if onnxruntime here offers ``provider``'s first choice, else a one-line reason with the fix."""
    wanted = PROVIDERS[provider][0]
    if wanted in available:
        return None
    return f"onnxruntime here offers {available}, not {wanted}: {INSTALL_HINTS[wanted]}"


def device_type(active: list[str]) -> str:
    """The memory an I/O binding should use for a session running on ``active`` providers."""
    return "cuda" if active and active[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
