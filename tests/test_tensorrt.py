"""export.tensorrt: the one TensorRT path (onnxruntime's TensorRT EP with an engine cache in the bundle).

Everything that runs without TensorRT is tested here; the real engine build/check is marked
``tensorrt`` and skipped with a reason where onnxruntime has no TensorRT execution provider."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from export_fixtures import tiny_export  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402

from export import tensorrt as T  # noqa: E402
from export.compare import Match  # noqa: E402
from runtime.bundle import Bundle  # noqa: E402

HAVE_TRT_EP = "TensorrtExecutionProvider" in ort.get_available_providers()


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
    assert all(all(isinstance(d, int) for t in g.inputs for d in t.shape) for g in T.engine_graphs(bundle)), \
        "TensorRT engines need the fixed shapes of the step graphs (no optimisation profiles are set)"


def test_golden_check_and_manifest_record(bundle, bundle_dir, tmp_path):
    """check_golden over onnxruntime CPU passes; a perturbed runner fails; record() keeps a valid bundle."""
    graph = bundle.graphs["decoder_step_c4"]
    golden = dict(np.load(bundle_dir / "golden" / "decoder_step_c4.npz"))
    sess = ort.InferenceSession(str(bundle.graph_path(graph.name)), providers=["CPUExecutionProvider"])
    run = T.session_runner(sess, graph)
    matches = T.check_golden(run, golden, graph, T.TRT_FP32_MIN_SNR_DB)
    assert [m.name for m in matches] == [t.name for t in graph.outputs] and all(m.ok for m in matches)
    noisy = T.check_golden(lambda f: {k: v + 0.05 * np.abs(v).max() if v.dtype.kind == "f" else v
                                      for k, v in run(f).items()}, golden, graph, T.TRT_FP32_MIN_SNR_DB)
    assert not all(m.ok for m in noisy)
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    manifest = Bundle(b).manifest
    T.record(manifest, graph, True, [Match("audio", 71.234, 1e-5, True), Match("state_out.x", float("inf"), 0.0, True)],
             "trt_cache", "1.23.0", ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    (b / "manifest.json").write_text(json.dumps(manifest))
    rec = Bundle(b).manifest["tensorrt"]  # still a valid bundle
    assert rec["fp16"] is True and rec["cache_dir"] == "trt_cache" and rec["via"].startswith("onnxruntime")
    assert rec["graphs"]["decoder_step_c4"] == {"min_snr_db": {"audio": 71.23, "state_out.x": "inf"}, "ok": True}


@pytest.mark.skipif(HAVE_TRT_EP, reason="onnxruntime here has TensorRT: the missing-TensorRT error cannot be observed")
def test_missing_tensorrt_is_a_one_line_error(bundle_dir, capsys):
    with pytest.raises(T.TensorRTUnavailable, match="TensorrtExecutionProvider"):
        T.import_ort_with_trt()
    assert T.main([str(bundle_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot build TensorRT engines") and err.count("\n") == 1
    assert "pip install onnxruntime-gpu" in err


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT_EP, reason="onnxruntime here has no TensorrtExecutionProvider "
                                            "(onnxruntime-gpu + TensorRT cannot be installed on this project's machines)")
@pytest.mark.parametrize("fp16", [False, True])
def test_real_engines_match_golden_and_the_runtime_reuses_them(bundle_dir, tmp_path, fp16):
    from runtime.codec import CodecSession

    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    lines: list[str] = []
    assert T.export_engines(b, fp16=fp16, log=lines.append), lines
    rec = Bundle(b).manifest["tensorrt"]
    assert set(rec["graphs"]) == {g.name for g in T.engine_graphs(Bundle(b))} and rec["fp16"] == fp16
    cached = sorted(p.name for p in (b / "trt_cache").iterdir())
    assert cached, "no engine was cached"
    s = CodecSession(b, provider="tensorrt")
    assert s.active_providers[0] == "TensorrtExecutionProvider" and s.trt_fp16 == fp16
    s.encode(np.zeros(1920 * 4, dtype=np.float32))
    assert sorted(p.name for p in (b / "trt_cache").iterdir()) == cached, "the runtime rebuilt the engines"
