"""export.onnx: bundle layout, state I/O, golden pairs, the parity ladder and the self-check."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export_fixtures import tiny_export  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402

from export.compare import snr_db  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(exported) -> dict:
    return json.loads((exported / "bundle" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def model(exported):
    from codec.checkpoint import load_checkpoint

    m, _ = load_checkpoint(exported / "ckpt")
    return m


def test_manifest_facts(manifest, exported):
    from runtime.bundle import sha256_file

    assert manifest["format_version"] == 2
    codec = manifest["codec"]
    assert (codec["sample_rate"], codec["hop"], codec["vq_strides"]) == (16000, 480, [4, 2, 1])
    assert codec["codebook_sizes"] == [50, 300, 300] and codec["latent_dim"] == 16
    assert manifest["chunk_frames"] == [4, 8]
    assert manifest["latency_ms"]["algorithmic"] == pytest.approx(150.0)
    vocab = json.loads((exported / "ckpt" / "vocab.json").read_text())
    assert manifest["vocab"]["fingerprint"] == vocab["fingerprint"] and manifest["vocab"]["gguf"] == vocab["gguf"]
    assert manifest["git_sha"] and manifest["verification"]["ok"]
    bundle = exported / "bundle"
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert all(sha256_file(bundle / f) == h for f, h in manifest["files"].items())


def test_graphs_have_state_io_and_metadata(manifest, exported):
    names = set(manifest["graphs"])
    assert names == {"encoder_step_c4", "encoder_step_c8", "decoder_step_c4", "decoder_step_c8",
                     "encoder_offline", "decoder_offline"}
    enc_state = [s["name"] for s in manifest["state"]["encoder"]]
    assert enc_state and all(n.startswith("state_in.") for n in enc_state)
    for name, graph in manifest["graphs"].items():
        model = onnx.load(str(exported / "bundle" / graph["file"]))
        assert model.opset_import[0].version >= 17
        props = {p.key: p.value for p in model.metadata_props}
        assert props["graph"] == name and json.loads(props["vocab"]) == manifest["vocab"]
        assert json.loads(props["state"])["encoder"] == manifest["state"]["encoder"]
        assert not any("original0" in i.name or "weight_g" in i.name for i in model.graph.initializer)
        sess = ort.InferenceSession(str(exported / "bundle" / graph["file"]), providers=["CPUExecutionProvider"])
        ins, outs = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
        assert ins == [t["name"] for t in graph["inputs"]] and outs == [t["name"] for t in graph["outputs"]]
        if graph["kind"].endswith("_step"):
            part = graph["kind"].split("_")[0]
            assert ins[1:] == [s["name"] for s in manifest["state"][part]]
            assert outs[1:] == [n.replace("state_in.", "state_out.") for n in ins[1:]]
            assert all(isinstance(d, int) for i in sess.get_inputs() for d in i.shape), "fixed shapes"
        else:
            assert any(isinstance(d, str) for d in sess.get_inputs()[0].shape), "dynamic time axis"


def test_golden_pairs_are_consecutive_steps(manifest, exported):
    for name, rel in manifest["golden"].items():
        if name == "offline":
            continue
        g = np.load(exported / "bundle" / rel)
        state = [t["name"] for t in manifest["graphs"][name]["inputs"][1:]]
        steps = g[f"in.{manifest['graphs'][name]['inputs'][0]['name']}"].shape[0]
        assert steps >= 16
        for n in state:
            out = g[f"out.{n.replace('state_in.', 'state_out.')}"]
            np.testing.assert_array_equal(g[f"in.{n}"][1:], out[:-1])
        assert any(np.abs(g[f"out.{n.replace('state_in.', 'state_out.')}"][-1]).max() > 0 for n in state)


@pytest.mark.parametrize("chunk", [pytest.param(1, id="chunk1"), pytest.param(2, id="chunk2"),
                                   pytest.param(3, id="chunk3-odd")])
def test_ladder_torch_stream_vs_torch_offline(model, exported, chunk):
    off = np.load(exported / "bundle" / "golden" / "offline.npz")
    tol = TOLERANCES["latent_torch_stream_vs_torch_offline"]
    audio = torch.from_numpy(off["audio"])[..., : 24 * 480]
    state, latents = model.encoder.init_state(1), []
    with torch.no_grad():
        for start in range(0, audio.shape[-1], chunk * 480):
            y, *state = model.encoder.step(audio[..., start:start + chunk * 480], *state)
            latents.append(y)
        z = torch.cat(latents, -1).numpy()
        assert snr_db(off["latent"][..., :24], z) >= tol.min_snr_db
        zq = torch.from_numpy(off["zq"][..., :24])
        state, pcm = model.decoder.init_state(1), []
        for start in range(0, 24, chunk):
            y, *state = model.decoder.step(zq[..., start:start + chunk], *state)
            pcm.append(y)
    ref = model.decoder(zq).detach().numpy()
    assert snr_db(ref, torch.cat(pcm, -1).numpy()) >= tol.min_snr_db


def test_ladder_ort_vs_torch_golden(exported):
    from export.verify import NEAR_TIE_EPS, ORT_MIN_SNR_DB, verify_bundle

    tol = TOLERANCES["codec_ort_cpu_vs_torch"]
    assert (ORT_MIN_SNR_DB, NEAR_TIE_EPS) == (tol.min_snr_db, tol.tie_eps), "export gate must follow the table"
    report = verify_bundle(exported / "bundle", log=lambda line: None)
    assert report.ok, report.lines()
    assert all(m.snr_db >= tol.min_snr_db or m.max_abs <= 1e-6 for m in report.matches)
    for c in report.codes.values():
        assert c["hard"] == 0 and c["mismatch"] / c["total"] <= tol.max_tie_rate


def test_verification_catches_a_mismatch(exported, tmp_path):
    from export.manifest import finalize
    from export.verify import verify_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    path = bundle / "golden" / "decoder_step_c4.npz"
    g = dict(np.load(path))
    g["out.audio"] = g["out.audio"] * 1.01  # a 1 % gain error: 40 dB, below the 60 dB gate
    np.savez(path, **g)
    finalize(bundle, json.loads((bundle / "manifest.json").read_text()))
    report = verify_bundle(bundle, log=lambda line: None)
    assert not report.ok
    assert any("decoder_step_c4[audio]" in f for f in report.summary()["failed"])


def test_cli_refuses_overwrite_and_reports_errors(exported, tmp_path, capsys):
    from export.onnx import main

    assert main([str(exported / "ckpt"), "--out", str(exported / "bundle")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err and err.count("\n") == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert main([str(exported / "ckpt"), "--out", str(tmp_path / "other"), "--force"]) == 1
    assert "not a codec bundle" in capsys.readouterr().err and (tmp_path / "other" / "keep.txt").exists()
