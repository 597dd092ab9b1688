"""Build TensorRT engines for a bundle's fixed-chunk step graphs and check them on the golden pairs.

``python -m export.tensorrt BUNDLE_DIR [--fp16]`` writes ``trt/<graph>.<fp32|fp16>.plan`` for every
``encoder_step_c{k}`` / ``decoder_step_c{k}`` graph, checks each engine against ``golden/<graph>.npz``
(fp32 must reach ``TRT_FP32_MIN_SNR_DB``; fp16 is reported) and records engines, profiles, TensorRT
version and SNRs in ``manifest.json``.

TensorRT is optional and imported lazily (``import_tensorrt``): everything that does not need it
(profile shapes, tensor order, manifest records, the error when it is missing) works without it.
Device buffers are torch CUDA tensors (export already depends on torch), so no pycuda is needed.
The API follows TensorRT 10: explicit batch is the default (``create_network(0)``), named I/O
tensors (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from export.compare import Match, compare
from kernels.tolerances import TOLERANCES
from runtime.bundle import MANIFEST, Bundle, BundleError, GraphSpec, sha256_file
from runtime.cli import atomic_path, fatal, reraise_interrupt, run_cli

TRT_FP32_MIN_SNR_DB = float(TOLERANCES["codec_trt_fp32_vs_torch"].min_snr_db)  # the one tolerance table
WORKSPACE_BYTES = 1 << 30
INSTALL_HINT = ("TensorRT is not installed (import tensorrt failed: {err}). It needs an NVIDIA GPU with CUDA: "
                "`pip install 'tensorrt>=10'` there, or use the onnxruntime providers (cpu/cuda) instead.")
# Layers whose fp16 rounding hurts most in this codec: reductions and normalisations (variance of
# small activations), softmax (attention logits), and unary transcendental ops (Snake's sin, exp, sqrt).
PRECISION_SENSITIVE = ("REDUCE", "SOFTMAX", "NORMALIZATION", "UNARY")


class TensorRTUnavailable(RuntimeError):
    """TensorRT (>= 10) or a CUDA device is not available."""


def import_tensorrt(fp16: bool = False) -> Any:
    """``import tensorrt`` with a clear, actionable error where it is missing, too old, or (for fp16
    engines) TensorRT 11+: its networks are always strongly typed and it removed ``BuilderFlag.FP16``,
    the precision-constraint flags and per-layer precision hints this exporter's fp16 path uses."""
    try:
        import tensorrt as trt
    except ImportError as e:
        reraise_interrupt(e)
        raise TensorRTUnavailable(INSTALL_HINT.format(err=e)) from None
    check_version(trt.__version__, fp16)
    return trt


def check_version(version: str, fp16: bool) -> None:
    """Raise ``TensorRTUnavailable`` for a TensorRT this exporter cannot drive (see ``import_tensorrt``)."""
    major = int(version.split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {version} found; this exporter needs TensorRT 10 (pip install "
                                  "'tensorrt>=10,<11')")
    if major >= 11 and fp16:
        raise TensorRTUnavailable(f"TensorRT {version} builds strongly typed networks only (no BuilderFlag.FP16 "
                                  "or precision constraints): build fp32 engines (drop --fp16) or install "
                                  "TensorRT 10 for fp16 (pip install 'tensorrt>=10,<11')")


def engine_graphs(bundle: Bundle) -> list[GraphSpec]:
    """The fixed-chunk step graphs, encoder first then decoder, by chunk size."""
    return [bundle.graphs[n] for n in sorted(bundle.graphs, key=lambda n: (not n.startswith("enc"), n))
            if bundle.graphs[n].kind.endswith("_step")]


def profile_shapes(graph: GraphSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """One explicit optimisation profile: ``{input: (min, opt, max)}``; all equal for fixed-chunk graphs."""
    shapes = {}
    for t in graph.inputs:
        if not all(isinstance(d, int) for d in t.shape):
            raise ValueError(f"{graph.name}: input {t.name} has a dynamic shape {t.shape}; "
                             "TensorRT engines are built for the fixed-chunk graphs only")
        shape = tuple(int(d) for d in t.shape)
        shapes[t.name] = (shape, shape, shape)
    return shapes


def tensor_order(graph: GraphSpec) -> list[tuple[str, str]]:
    """I/O tensors as TensorRT enumerates them for a parsed ONNX graph: inputs, then outputs."""
    return [(t.name, "input") for t in graph.inputs] + [(t.name, "output") for t in graph.outputs]


def engine_file(graph: GraphSpec, fp16: bool) -> str:
    return f"trt/{graph.name}.{'fp16' if fp16 else 'fp32'}.plan"


def build_engine(trt: Any, onnx_path: Path, graph: GraphSpec, fp16: bool,
                 workspace: int = WORKSPACE_BYTES) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine with one profile from ``profile_shapes``."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    expected = [n for n, mode in tensor_order(graph) if mode == "input"]
    if names != expected:
        raise RuntimeError(f"{onnx_path}: TensorRT inputs {names} differ from the manifest's {expected}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        pin_fp32(trt, network)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(graph).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path} (see the log above)")
    return bytes(serialized)


def pin_fp32(trt: Any, network: Any) -> int:
    """Keep precision-sensitive layers in fp32 inside an fp16 engine; returns how many were pinned."""
    sensitive = {getattr(trt.LayerType, n) for n in PRECISION_SENSITIVE if hasattr(trt.LayerType, n)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in sensitive:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


class EngineRunner:
    """Runs one deserialized engine on CUDA with torch-allocated device buffers."""

    def __init__(self, trt: Any, engine_bytes: bytes) -> None:
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailable("TensorRT engines need a CUDA device; torch.cuda.is_available() is False")
        self.trt, self.torch = trt, torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.stream = torch.cuda.Stream()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, trt = self.torch, self.trt
        buffers = {}
        for name in self.inputs:  # all input shapes first: output shapes depend on them
            t = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            self.context.set_input_shape(name, tuple(t.shape))
            buffers[name] = t
        for name in self.names:
            if name not in buffers:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                shape = tuple(self.context.get_tensor_shape(name))
                buffers[name] = torch.from_numpy(np.empty(shape, dtype=dtype)).cuda()
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return {n: buffers[n].cpu().numpy() for n in self.names if n not in self.inputs}


def check_golden(run: Any, golden: dict[str, np.ndarray], graph: GraphSpec, min_snr_db: float) -> list[Match]:
    """Feed every golden step's inputs (state teacher-forced) and compare every output over all steps."""
    steps = golden[f"in.{graph.inputs[0].name}"].shape[0]
    got: dict[str, list[np.ndarray]] = {t.name: [] for t in graph.outputs}
    for s in range(steps):
        out = run({t.name: golden[f"in.{t.name}"][s] for t in graph.inputs})
        for t in graph.outputs:
            got[t.name].append(out[t.name])
    return [compare(t.name, golden[f"out.{t.name}"], np.stack(got[t.name]), min_snr_db) for t in graph.outputs]


def record_engine(manifest: dict[str, Any], graph: GraphSpec, fp16: bool, file: str, digest: str,
                  matches: list[Match], trt_version: str, device: str) -> None:
    """Add one engine to ``manifest["tensorrt"]`` and its hash to ``manifest["files"]`` (in place)."""
    trt_rec = manifest.setdefault("tensorrt", {"engines": {}})
    trt_rec.update({"version": trt_version, "device": device})
    trt_rec["engines"].setdefault(graph.name, {})["fp16" if fp16 else "fp32"] = {
        "file": file,
        "profile": {n: [list(s) for s in shapes] for n, shapes in profile_shapes(graph).items()},
        "tensor_order": [n for n, _ in tensor_order(graph)],
        "min_snr_db": {m.name: (round(m.snr_db, 2) if np.isfinite(m.snr_db) else str(m.snr_db)) for m in matches},
        "precision_fallback": list(PRECISION_SENSITIVE) if fp16 else [],
    }
    manifest["files"][file] = digest


def export_engines(bundle_dir: Path, fp16: bool, log: Any = print) -> bool:
    """Build, check and record fp32 engines (and fp16 ones with ``fp16``); False if an fp32 check fails."""
    trt = import_tensorrt(fp16)
    bundle = Bundle(bundle_dir)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    manifest, ok = bundle.manifest, True
    (bundle_dir / "trt").mkdir(exist_ok=True)
    for graph in engine_graphs(bundle):
        golden = dict(np.load(bundle_dir / "golden" / f"{graph.name}.npz"))
        for half in ([False, True] if fp16 else [False]):
            blob = build_engine(trt, bundle.graph_path(graph.name), graph, half)
            rel = engine_file(graph, half)
            with atomic_path(bundle_dir / rel) as tmp:
                tmp.write_bytes(blob)
            matches = check_golden(EngineRunner(trt, blob), golden, graph, TRT_FP32_MIN_SNR_DB)
            for m in matches:
                log(f"{graph.name} {'fp16' if half else 'fp32'} {m}")
            ok &= half or all(m.ok for m in matches)
            record_engine(manifest, graph, half, rel, sha256_file(bundle_dir / rel), matches, trt.__version__, device)
    with atomic_path(bundle_dir / MANIFEST) as tmp:  # a Ctrl-C must not leave the bundle's manifest half-written
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory written by python -m export.onnx")
    p.add_argument("--fp16", action="store_true", help="also build fp16 engines (precision-sensitive layers fp32)")
    args = p.parse_args(argv)
    try:
        ok = export_engines(args.bundle, args.fp16)
    except (TensorRTUnavailable, BundleError, RuntimeError, OSError) as e:
        return fatal(str(e))
    if not ok:
        return fatal(f"a TensorRT fp32 engine is below {TRT_FP32_MIN_SNR_DB} dB SNR on the golden pairs")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
