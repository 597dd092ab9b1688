"""Build a bundle's TensorRT engines ahead of time and check them on the golden pairs.

``python -m export.tensorrt BUNDLE_DIR [--fp16]`` runs every fixed-chunk step graph
(``encoder_step_c{k}`` / ``decoder_step_c{k}``) once per golden step through onnxruntime's TensorRT
execution provider, which builds the engines and stores them in the bundle's engine cache
(``runtime.providers.trt_cache_dir``: ``<bundle>/trt_cache``). Each graph's outputs are compared
with ``golden/<graph>.npz`` (fp32 engines must reach ``TRT_FP32_MIN_SNR_DB``; fp16 is reported) and
``manifest.json`` records the precision, the cache folder, the onnxruntime version and the SNRs.
``CodecSession(provider="tensorrt")`` (``--provider tensorrt`` on every CLI) then loads the cached
engines: the same provider options, so the same engines (runtime/providers.py: the one TensorRT path).

TensorRT's Python API is never used: its 10 -> 11 changes (strongly typed networks, no FP16 builder
flag, no per-layer precision hints) are onnxruntime's business, and fp16 is its ``trt_fp16_enable``
(TensorRT keeps layers in fp32 where it must). Engines are specific to the GPU and TensorRT
version; onnxruntime rebuilds a cached engine that does not fit.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export.compare import Match, compare
from kernels.tolerances import TOLERANCES
from runtime.bundle import MANIFEST, Bundle, BundleError, GraphSpec
from runtime.cli import atomic_path, fatal, reraise_interrupt, run_cli
from runtime.providers import missing_provider, provider_list, trt_cache_dir, trt_options

TRT_FP32_MIN_SNR_DB = float(TOLERANCES["codec_trt_fp32_vs_torch"].min_snr_db)  # the one tolerance table


class TensorRTUnavailable(RuntimeError):
    """onnxruntime here has no TensorRT execution provider (or no onnxruntime at all)."""


def import_ort_with_trt() -> Any:
    """``import onnxruntime``, checking that it offers the TensorRT EP; else one actionable line."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        reraise_interrupt(e)
        raise TensorRTUnavailable(f"onnxruntime is not installed ({e}): pip install onnxruntime-gpu") from None
    why = missing_provider("tensorrt", ort.get_available_providers())
    if why is not None:
        raise TensorRTUnavailable(f"cannot build TensorRT engines: {why}")
    return ort


def engine_graphs(bundle: Bundle) -> list[GraphSpec]:
    """The fixed-chunk step graphs, encoder first then decoder, by chunk size."""
    return [bundle.graphs[n] for n in sorted(bundle.graphs, key=lambda n: (not n.startswith("enc"), n))
            if bundle.graphs[n].kind.endswith("_step")]


def check_golden(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], golden: dict[str, np.ndarray],
                 graph: GraphSpec, min_snr_db: float) -> list[Match]:
    """Feed every golden step's inputs (state teacher-forced) and compare every output over all steps."""
    steps = golden[f"in.{graph.inputs[0].name}"].shape[0]
    got: dict[str, list[np.ndarray]] = {t.name: [] for t in graph.outputs}
    for s in range(steps):
        out = run({t.name: golden[f"in.{t.name}"][s] for t in graph.inputs})
        for t in graph.outputs:
            got[t.name].append(out[t.name])
    return [compare(t.name, golden[f"out.{t.name}"], np.stack(got[t.name]), min_snr_db) for t in graph.outputs]


def record(manifest: dict[str, Any], graph: GraphSpec, fp16: bool, matches: list[Match], cache: str,
           ort_version: str, active: list[str]) -> None:
    """Add one graph's check to ``manifest["tensorrt"]`` (in place)."""
    rec = manifest.setdefault("tensorrt", {"graphs": {}})
    rec.update({"via": "onnxruntime TensorrtExecutionProvider", "onnxruntime": ort_version, "cache_dir": cache,
                "fp16": fp16, "providers": active})
    rec.setdefault("graphs", {})[graph.name] = {
        "min_snr_db": {m.name: (round(m.snr_db, 2) if np.isfinite(m.snr_db) else str(m.snr_db)) for m in matches},
        "ok": all(m.ok for m in matches)}


def session_runner(sess: Any, graph: GraphSpec) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    names = [t.name for t in graph.outputs]
    return lambda feeds: dict(zip(names, sess.run(names, feeds)))


def export_engines(bundle_dir: Path, fp16: bool, log: Callable[[str], Any] = print) -> bool:
    """Build (cache), check and record the engines of every step graph; False if an fp32 check fails."""
    ort = import_ort_with_trt()
    bundle = Bundle(bundle_dir)
    from runtime.codec import CodecSession  # the session computes the bundle id the cache is keyed by

    cache = trt_cache_dir(bundle.path, CodecSession.bundle_id_of(bundle))
    cache.mkdir(parents=True, exist_ok=True)
    manifest, ok = bundle.manifest, True
    for graph in engine_graphs(bundle):
        sess = ort.InferenceSession(str(bundle.graph_path(graph.name)),
                                    providers=provider_list("tensorrt", trt_options(cache, fp16)))
        active = sess.get_providers()
        if active[0] != "TensorrtExecutionProvider":
            raise TensorRTUnavailable(f"onnxruntime could not start TensorRT for {graph.name} (running on {active[0]})")
        golden = dict(np.load(bundle_dir / "golden" / f"{graph.name}.npz"))
        matches = check_golden(session_runner(sess, graph), golden, graph, TRT_FP32_MIN_SNR_DB)
        for m in matches:
            log(f"{graph.name} {'fp16' if fp16 else 'fp32'} {m}")
        ok &= fp16 or all(m.ok for m in matches)
        rel = str(cache.relative_to(bundle.path)) if cache.is_relative_to(bundle.path) else str(cache)
        record(manifest, graph, fp16, matches, rel, ort.__version__, active)
    with atomic_path(bundle_dir / MANIFEST) as tmp:  # a Ctrl-C must not leave the bundle's manifest half-written
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory written by python -m export.onnx")
    p.add_argument("--fp16", action="store_true", help="fp16 engines (reported, not gated: fp16 changes outputs)")
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
