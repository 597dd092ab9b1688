"""runtime.codec: CodecSession / CodecStream on a real exported bundle, bundle validation, the CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixture exports a bundle; the runtime itself is torch-free
ort = pytest.importorskip("onnxruntime")
sf = pytest.importorskip("soundfile")

from export_fixtures import DATA, REPO, bundle, real_speech, session, tiny_export  # noqa: E402,F401  (fixtures)
from tolerances import TOLERANCES  # noqa: E402

from export.compare import snr_db  # noqa: E402
from runtime.bundle import BundleError  # noqa: E402
from runtime.codec import CodecSession, ProviderFallbackWarning  # noqa: E402
from runtime.codec_cli import main  # noqa: E402
from runtime.tokens_file import read_tokens, write_tokens  # noqa: E402


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return real_speech(seconds=1.5)


def test_stream_in_random_chunks_equals_offline(session, speech):
    offline = session.encode(speech)
    stream = session.new_stream()
    rng = np.random.default_rng(0)
    groups, pos = [], 0
    while pos < len(speech):
        n = int(rng.integers(1, 5000))
        groups += stream.encode(speech[pos:pos + n])
        pos += n
    groups += stream.flush()
    assert len(groups) == len(offline[0]) == -(-len(speech) // 1920)
    for layer, ref in enumerate(offline):
        np.testing.assert_array_equal(np.concatenate([g[layer] for g in groups]), ref)
    tol = TOLERANCES["audio_runtime_stream_vs_runtime_offline"]
    streamed = session.new_stream().decode(groups)
    assert snr_db(session.decode(offline), streamed) >= tol.min_snr_db


def test_stream_output_is_causal_and_resettable(session, speech):
    stream = session.new_stream()
    first = stream.encode(speech[:1920 * 3 + 100])
    assert len(first) == 3 and [len(c) for c in first[0]] == [1, 2, 4]
    more = stream.encode(speech[1920 * 3 + 100:1920 * 6])
    whole = session.new_stream().encode(speech[:1920 * 6])
    for a, b in zip(first + more, whole):
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), "growing the input changed earlier codes"
    stream.reset()
    again = stream.encode(speech[:1920 * 3 + 100])
    assert all(np.array_equal(x, y) for a, b in zip(again, first) for x, y in zip(a, b))
    assert stream.encode(np.zeros(0, np.float32)) == []


def test_token_maps(session, bundle):
    words = np.asarray(json.loads((bundle.parent / "ckpt" / "vocab.json").read_text())["word_token_ids"])
    codes = np.arange(len(words))
    np.testing.assert_array_equal(session.code_to_token(1, codes), words)
    np.testing.assert_array_equal(session.token_to_code(1, words[::-1]), codes[::-1])
    np.testing.assert_array_equal(session.token_to_code(2, [0, 1, 2, 299]), [0, 1, 2, 299])
    not_a_word = next(i for i in range(300) if i not in set(words))
    with pytest.raises(ValueError, match="not in the layer-1 token table"):
        session.token_to_code(1, [words[0], not_a_word])
    with pytest.raises(ValueError, match="0..299"):
        session.token_to_code(3, [300])
    with pytest.raises(ValueError, match="0..49"):
        session.code_to_token(1, [50])
    with pytest.raises(ValueError, match="layer must be"):
        session.code_to_token(4, [0])
    assert session.fingerprint == json.loads((bundle / "manifest.json").read_text())["vocab"]["fingerprint"]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def _edit_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("damage, message", [
    pytest.param(lambda b: _edit_manifest(b, format_version=99), "unknown format_version 99", id="format-version"),
    pytest.param(lambda b: (b / "decoder_step_c4.onnx").unlink(), "decoder_step_c4.onnx is missing", id="missing-file"),
    pytest.param(lambda b: (b / "codebooks.npz").write_bytes((b / "codebooks.npz").read_bytes()[:-10] + b"x" * 10),
                 "codebooks.npz does not match its sha256", id="hash-mismatch"),
    pytest.param(lambda b: (b / "manifest.json").write_text("{not json"), "manifest.json is corrupt", id="corrupt"),
    pytest.param(lambda b: (b / "manifest.json").unlink(), "not a codec bundle", id="no-manifest"),
])
def test_bad_bundles_are_refused_by_name(bundle, tmp_path, damage, message):
    b = _copy(bundle, tmp_path)
    damage(b)
    with pytest.raises(BundleError, match=message):
        CodecSession(b)


def test_provider_fallback_is_reported(bundle):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA here: no fallback to observe")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = CodecSession(bundle, provider="cuda")
    assert any(issubclass(w.category, ProviderFallbackWarning) for w in caught)
    assert s.active_providers == ["CPUExecutionProvider"]


def test_cli_roundtrip_any_format_rate_channels(bundle, tmp_path, speech, capsys):
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.stack([speech, 0.5 * speech], 1), 16000)  # stereo at 16 kHz, FLAC
    digit = next((DATA / "fsdd" / "recordings").glob("*.wav"))  # 8 kHz mono wav
    tokens = tmp_path / "s.tokens"
    assert main(["encode", str(stereo), str(tokens), "--codec", str(bundle)]) == 0
    t = read_tokens(tokens)
    assert t.n_samples == len(speech) and t.n_groups == -(-len(speech) // 1920)
    out = tmp_path / "s.wav"
    assert main(["decode", str(tokens), str(out), "--codec", str(bundle)]) == 0
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, len(speech))
    assert main(["decode", str(tokens), str(out), "--codec", str(bundle)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["roundtrip", str(digit), str(out), "--codec", str(bundle), "--rate", "8000", "--force"]) == 0
    assert sf.info(out).samplerate == 8000 and abs(sf.info(out).frames - sf.info(digit).frames) <= 1


def test_cli_errors_are_one_line(bundle, tmp_path, speech, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech, 16000)
    tokens = tmp_path / "a.tokens"
    assert main(["encode", str(wav), str(tokens), "--codec", str(bundle)]) == 0
    other = read_tokens(tokens)
    other.fingerprint = "sha256:" + "f" * 64
    write_tokens(tmp_path / "other.tokens", other)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + b"\x00" * 40)
    cases = [
        (["decode", str(tmp_path / "other.tokens"), str(tmp_path / "o.wav")], "vocabulary"),
        (["decode", str(wav), str(tmp_path / "o.wav")], "not a .tokens file"),
        (["encode", str(empty), str(tmp_path / "e.tokens")], "empty"),
        (["encode", str(corrupt), str(tmp_path / "c.tokens")], "cannot read audio"),
        (["encode", str(tmp_path / "missing.wav"), str(tmp_path / "m.tokens")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv + ["--codec", str(bundle)]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and err.startswith("error:") and err.count("\n") == 1, err
    assert main(["encode", str(wav), str(tmp_path / "x.tokens"), "--codec", str(tmp_path)]) == 1
    assert "not a codec bundle" in capsys.readouterr().err


def test_cli_subprocess_no_traceback(bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    _edit_manifest(bad, format_version=99)
    proc = subprocess.run([sys.executable, "-m", "runtime.codec", "encode", "x.wav", str(tmp_path / "o.tokens"),
                           "--codec", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "unknown format_version 99" in proc.stderr


def test_stream_buffers_stay_fixed_when_input_is_sliced(session):
    """A long input fed in one call is processed in slices of fixed-size buffers; the codes equal
    those of the same audio fed chunk by chunk (the sliced plan is the same up to group boundaries)."""
    from runtime.codec_stream import CodecStream

    speech = real_speech(seconds=1.5)
    small = CodecStream(session, max_slice_seconds=0.25)
    sizes = (small._pcm.shape, small._lat.shape)
    whole = small.encode(speech) + small.flush()
    assert (small._pcm.shape, small._lat.shape) == sizes and small.search_seconds > 0
    ref = session.new_stream()
    pieces = [c for i in range(0, len(speech), 1920) for c in ref.encode(speech[i:i + 1920])] + ref.flush()
    assert len(whole) == len(pieces) == -(-len(speech) // 1920)
    for a, b in zip(whole, pieces):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_search_backend_choice(bundle):
    """CPU provider: numpy search, torch never needed. Asking for Triton without CUDA is a clear error."""
    s = CodecSession(bundle, threads=1)
    assert s.search_backend == "numpy"
    from kernels import gpu_search_available

    why = gpu_search_available()
    if why is None:
        pytest.skip("a CUDA GPU is present: the no-GPU error path cannot be exercised")
    with pytest.raises(RuntimeError, match="Triton codeword search cannot run here"):
        CodecSession(bundle, threads=1, search="triton")
    with pytest.raises(ValueError, match="unknown search"):
        CodecSession(bundle, threads=1, search="faiss")


def test_io_binding_streams_identically(bundle, session, speech):
    """The I/O-bound step path (the GPU providers' default; bound to CPU memory here) keeps the state
    as OrtValues between steps and gives exactly the codes and audio of the plain path."""
    bound = CodecSession(bundle, provider="cpu", threads=1, io_binding=True)
    assert bound.io_binding and bound.device == "cpu" and not session.io_binding
    state = bound.initial_state("encoder")
    assert all(isinstance(s, ort.OrtValue) for s in state)
    plain, fast = session.new_stream(), bound.new_stream()
    groups = plain.encode(speech) + plain.flush()
    bound_groups = fast.encode(speech) + fast.flush()
    assert len(groups) == len(bound_groups)
    for a, b in zip(groups, bound_groups):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    np.testing.assert_array_equal(plain.decode(groups), fast.decode(bound_groups))
    y0, s1 = bound.run_step("encoder", 4, speech[None, None, :1920].astype(np.float32), state)
    y1, _ = bound.run_step("encoder", 4, speech[None, None, :1920].astype(np.float32), state)
    np.testing.assert_array_equal(y0, y1)  # the caller's old state is not overwritten by a step


def test_tensorrt_provider_options_and_fallback(bundle, tmp_path):
    """provider="tensorrt": the one TensorRT path is onnxruntime's TensorRT EP with its engine cache in
    the bundle (or the user cache when the bundle is read-only); without it, a fallback warning."""
    from runtime.providers import provider_list, trt_cache_dir, trt_options

    opts = trt_options(tmp_path / "c", fp16=True)
    assert opts["trt_engine_cache_enable"] and opts["trt_fp16_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "c")
    assert provider_list("tensorrt", opts)[0] == ("TensorrtExecutionProvider", opts)
    assert provider_list("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    assert trt_cache_dir(b, "sha256:abc") == b / "trt_cache"
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime here has TensorRT: no fallback to observe")
    with pytest.warns(ProviderFallbackWarning, match="TensorrtExecutionProvider"):
        s = CodecSession(b, provider="tensorrt", threads=1)
    assert s.trt_cache == b / "trt_cache" and s.device == "cpu"  # bound to where it actually runs
    codes = s.encode(real_speech(seconds=0.5))
    assert len(codes) == 3
