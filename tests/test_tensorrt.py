"""export.tensorrt: everything around the TensorRT build that runs without TensorRT, plus the real
engine build/check (marked ``tensorrt``; skipped with a reason where TensorRT or CUDA is missing)."""
from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from export_fixtures import tiny_export  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402

from export import tensorrt as T  # noqa: E402
from export.compare import Match  # noqa: E402
from runtime.bundle import Bundle, sha256_file  # noqa: E402

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory) / "bundle"


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return Bundle(bundle_dir)


def test_thresholds_follow_the_tolerance_table():
    assert T.TRT_FP32_MIN_SNR_DB == TOLERANCES["codec_trt_fp32_vs_torch"].min_snr_db


def test_engine_graphs_are_the_fixed_chunk_graphs(bundle):
    names = [g.name for g in T.engine_graphs(bundle)]
    assert names == ["encoder_step_c4", "encoder_step_c8", "decoder_step_c4", "decoder_step_c8"]


def test_profile_shapes_come_from_the_manifest(bundle):
    for graph in T.engine_graphs(bundle):
        shapes = T.profile_shapes(graph)
        assert list(shapes) == [t.name for t in graph.inputs]
        k = graph.chunk_frames
        first = shapes[graph.inputs[0].name]
        assert first[0] == first[1] == first[2] == ((1, 1, k * 480) if graph.kind == "encoder_step" else (1, 16, k))
        part = graph.kind.split("_")[0]
        for spec in bundle.state[part]:
            assert shapes[spec.name] == (tuple(spec.shape),) * 3
    with pytest.raises(ValueError, match="dynamic shape"):
        T.profile_shapes(bundle.graphs["encoder_offline"])


def test_tensor_order_matches_the_onnx_graph(bundle, bundle_dir):
    """TensorRT's parser enumerates a graph's I/O in ONNX order; the runner relies on the manifest's."""
    for graph in T.engine_graphs(bundle):
        g = onnx.load(str(bundle_dir / graph.file)).graph
        expected = [(i.name, "input") for i in g.input] + [(o.name, "output") for o in g.output]
        assert T.tensor_order(graph) == expected


def test_record_engine_updates_manifest_and_hashes(bundle_dir, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    bundle = Bundle(b)
    graph = bundle.graphs["decoder_step_c4"]
    rel = T.engine_file(graph, fp16=True)
    (b / "trt").mkdir()
    (b / rel).write_bytes(b"engine bytes")
    manifest = bundle.manifest
    T.record_engine(manifest, graph, True, rel, sha256_file(b / rel),
                    [Match("audio", 71.234, 1e-5, True), Match("state_out.x", float("inf"), 0.0, True)],
                    "10.9.0", "NVIDIA H100")
    (b / "manifest.json").write_text(json.dumps(manifest))
    rec = Bundle(b).manifest["tensorrt"]  # still a valid bundle: the engine is hashed like any file
    entry = rec["engines"]["decoder_step_c4"]["fp16"]
    assert rec["version"] == "10.9.0" and entry["file"] == "trt/decoder_step_c4.fp16.plan"
    assert entry["min_snr_db"] == {"audio": 71.23, "state_out.x": "inf"}
    assert entry["profile"]["latent"] == [[1, 16, 4]] * 3 and entry["precision_fallback"]
    (b / rel).write_bytes(b"tampered")
    with pytest.raises(Exception, match="sha256"):
        Bundle(b)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed: the missing-TensorRT error cannot be observed")
def test_missing_tensorrt_is_a_clear_error(bundle_dir, capsys):
    with pytest.raises(T.TensorRTUnavailable, match="TensorRT is not installed"):
        T.import_tensorrt()
    assert T.main([str(bundle_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: TensorRT is not installed") and err.count("\n") == 1
    assert "pip install" in err


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT (>= 10) is not installed; it cannot be installed on this project's machines")
def test_real_engines_match_golden(bundle_dir, tmp_path):
    if not _cuda():
        pytest.skip("TensorRT engines need a CUDA GPU")
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    lines: list[str] = []
    assert T.export_engines(b, fp16=True, log=lines.append), lines
    engines = Bundle(b).manifest["tensorrt"]["engines"]
    assert set(engines) == {g.name for g in T.engine_graphs(Bundle(b))}
    for name, rec in engines.items():
        snrs = [v for v in rec["fp32"]["min_snr_db"].values() if v != "inf"]
        assert all(s >= T.TRT_FP32_MIN_SNR_DB for s in snrs), (name, rec["fp32"])
        assert "fp16" in rec and (b / rec["fp16"]["file"]).is_file()
    golden = dict(np.load(b / "golden" / "decoder_step_c4.npz"))
    trt = T.import_tensorrt()
    runner = T.EngineRunner(trt, (b / engines["decoder_step_c4"]["fp32"]["file"]).read_bytes())
    out = runner({k[3:]: v[0] for k, v in golden.items() if k.startswith("in.")})
    assert np.allclose(out["audio"], golden["out.audio"][0], atol=1e-3)


@pytest.mark.parametrize("version, fp16, message", [
    pytest.param("8.6.1", False, "needs TensorRT 10", id="too-old"),
    pytest.param("11.0.0", True, "strongly typed", id="trt11-fp16"),
])
def test_unsupported_tensorrt_versions_are_one_line_errors(version, fp16, message):
    with pytest.raises(T.TensorRTUnavailable, match=message):
        T.check_version(version, fp16)
    T.check_version("10.13.0", fp16)  # TensorRT 10 builds both
    T.check_version("11.0.0", False)  # fp32 engines still build with 11
