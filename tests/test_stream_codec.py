"""``python -m runtime.stream --task codec``: file streaming against the offline codec, Ctrl-C,
bad inputs and the missing-device errors. Real onnxruntime sessions over the tiny exported bundle,
real recordings from ../shared/data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixture exports a bundle; the runtime itself is torch-free
sf = pytest.importorskip("soundfile")

from export_fixtures import DATA, REPO, bundle, session  # noqa: E402,F401  (fixtures)
from tolerances import TOLERANCES  # noqa: E402

from export.compare import snr_db  # noqa: E402
from runtime.audio import read_audio  # noqa: E402
from runtime.codec import CodecSession  # noqa: E402
from runtime.stream import main  # noqa: E402

SPEECH = DATA / "speech16k" / "arctic_a0010.wav"
NOISY = DATA / "voicebank_demand" / "noisy" / "p257_094.wav"
LSB = 2.0 / 32768  # a 16-bit output file holds the decoder's float output to within this


def _offline_round_trip(session: CodecSession, pcm: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    codes = session.encode(pcm)
    return codes, np.clip(session.decode(codes)[:len(pcm)], -1, 1)


def _run(args: list[str]) -> int:
    return main([*args, "--threads", "1"])


def _stream_codes(session: CodecSession, path: Path, chunk_groups: int) -> list[np.ndarray]:
    """The codes the streaming pipeline produces for ``path`` (in process, --fast path)."""
    from runtime.audio_io import FileReader
    from runtime.stream_pipeline import Pipeline, run_fast
    from runtime.stream_stats import StreamStats
    from runtime.stream_tasks import CodecProcessor

    reader = FileReader(path)
    proc = CodecProcessor(session, chunk_groups)
    run_fast(reader, Pipeline(proc, None, StreamStats(), reader.rate, realtime=False), threading.Event())
    return [np.concatenate([g[l] for g in proc.codes]) for l in range(3)]


@pytest.mark.parametrize("chunk_groups", [1, 3])
def test_streamed_codes_equal_offline_coding(session, chunk_groups):
    pcm = read_audio(NOISY, 16000)
    offline = session.encode(pcm)
    for got, ref in zip(_stream_codes(session, NOISY, chunk_groups), offline):
        np.testing.assert_array_equal(got, ref)


def test_fast_file_to_file_equals_the_offline_round_trip(bundle, session, tmp_path, capsys):
    out, stats = tmp_path / "out.wav", tmp_path / "stats.json"
    assert _run(["--task", "codec", "--codec", str(bundle), "--input", str(SPEECH), "--output", str(out),
                 "--fast", "--stats-json", str(stats)]) == 0
    pcm = read_audio(SPEECH, 16000)
    _, ref = _offline_round_trip(session, pcm)
    got, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and len(got) == len(pcm)
    tol = TOLERANCES["audio_runtime_stream_vs_runtime_offline"]
    assert np.abs(got - ref).max() <= LSB or snr_db(ref, got) >= min(tol.min_snr_db, 60.0)
    d = json.loads(stats.read_text())
    assert d["task"] == "codec" and d["end"] == "eof"
    assert d["audio_in_seconds"] == pytest.approx(len(pcm) / 16000, abs=1e-3)
    for stage in ("encode", "search", "decode", "playback"):
        assert d["stages"][stage]["n"] == -(-len(pcm) // 1920) and d["stages"][stage]["p95_ms"] >= 0
    assert d["end_to_end"]["n"] > 0 and d["stages"]["llm_generate"]["n"] == 0
    err = capsys.readouterr().err
    assert "stage" in err and "p95 ms" in err and "search" in err  # the final table


def test_44k_stereo_file_is_mixed_and_resampled_in_stream(bundle, session, tmp_path):
    """A 44.1 kHz stereo float file, paced in real time: soxr's stream API gives exactly the offline
    resampling, so the codes and the output equal the offline round trip of ``read_audio``."""
    x, _ = sf.read(str(SPEECH), dtype="float32")
    x = x[:int(1.3 * 16000)]
    import soxr

    src = tmp_path / "stereo44k.wav"
    up = soxr.resample(x, 16000, 44100)
    sf.write(str(src), np.stack([up, 0.25 * up], axis=1), 44100, subtype="FLOAT")
    pcm = read_audio(src, 16000)
    for got, ref in zip(_stream_codes(session, src, 1), session.encode(pcm)):
        np.testing.assert_array_equal(got, ref)
    out = tmp_path / "out.wav"
    t0 = time.perf_counter()
    assert _run(["--task", "codec", "--codec", str(bundle), "--input", str(src), "--output", str(out),
                 "--quiet"]) == 0
    assert time.perf_counter() - t0 >= 0.9 * len(pcm) / 16000  # paced: live-like, not --fast
    got, rate = sf.read(str(out), dtype="float32")
    _, ref = _offline_round_trip(session, pcm)
    assert rate == 16000 and len(got) == len(pcm) and np.abs(got - ref).max() <= LSB


def _long_input(tmp_path: Path, seconds: float = 8.0) -> Path:
    files = sorted((DATA / "speech16k").glob("*.wav"))
    parts, n = [], 0
    for f in files:
        x = read_audio(f, 16000)
        parts.append(x)
        n += len(x)
        if n >= seconds * 16000:
            break
    path = tmp_path / "long.wav"
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def test_sigint_leaves_a_complete_valid_output(bundle, session, tmp_path):
    src, out = _long_input(tmp_path), tmp_path / "out.wav"
    cmd = [sys.executable, "-m", "runtime.stream", "--task", "codec", "--codec", str(bundle), "--input", str(src),
           "--output", str(out), "--threads", "1", "--stats-json", str(tmp_path / "s.json")]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(f.name.startswith(".out.partial") and f.stat().st_size > 20000
                                             for f in tmp_path.iterdir()):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted: wrote" in err
    got, rate = sf.read(str(out), dtype="float32")
    n_in = sf.info(str(src)).frames
    assert rate == 16000 and 0 < len(got) < n_in
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")], "a partial file was left behind"
    full = read_audio(src, 16000)
    _, ref = _offline_round_trip(session, full)
    keep = len(got) - len(got) % 1920 - 1920  # the last group was zero-padded at the stop
    assert np.abs(got[:keep] - ref[:keep]).max() <= LSB
    assert json.loads((tmp_path / "s.json").read_text())["end"] == "stopped"


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    x, _ = sf.read(str(SPEECH), dtype="float32")
    paths = {"corrupt": tmp_path / "corrupt.wav", "empty": tmp_path / "empty.wav", "dir": tmp_path,
             "one": tmp_path / "one.wav", "wide": tmp_path / "wide.wav", "nan": tmp_path / "nan.wav",
             "text": tmp_path / "notes.txt"}
    paths["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("not audio\n")
    sf.write(str(paths["one"]), np.array([0.5], np.float32), 16000)
    sf.write(str(paths["wide"]), np.tile(x[:48000, None], (1, 8)), 96000, subtype="FLOAT")
    nan = x[:16000].copy()
    nan[::100] = np.nan
    sf.write(str(paths["nan"]), nan, 16000, subtype="FLOAT")
    return paths


@pytest.mark.parametrize("case, ok, message", [
    pytest.param("corrupt", False, "cannot read audio file", id="corrupt"),
    pytest.param("empty", False, "is empty", id="empty"),
    pytest.param("dir", False, "directory", id="directory"),
    pytest.param("text", False, "cannot read audio file", id="unsupported-format"),
    pytest.param("one", True, None, id="one-sample"),
    pytest.param("wide", True, None, id="8-channel-96kHz"),
    pytest.param("nan", True, "replaced by silence", id="nan-samples"),
])
def test_bad_inputs_give_one_line_or_are_processed(bundle, tmp_path, capsys, case, ok, message):
    (tmp_path / "in").mkdir()
    src = _bad_inputs(tmp_path / "in")[case]
    out = tmp_path / "out.wav"
    rc = _run(["--task", "codec", "--codec", str(bundle), "--input", str(src), "--output", str(out), "--fast"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if ok:
        info = sf.info(str(src))
        assert rc == 0 and sf.info(str(out)).frames == round(info.frames * 16000 / info.samplerate)
        assert np.isfinite(sf.read(str(out))[0]).all()
    else:
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc == 1 and len(lines) == 1 and message in lines[0] and not out.exists()
    if message and ok:
        assert message in err


def test_existing_output_needs_force(bundle, tmp_path, capsys):
    out = tmp_path / "out.wav"
    out.write_bytes(b"x")
    assert _run(["--task", "codec", "--codec", str(bundle), "--input", str(SPEECH), "--output", str(out)]) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"x"


@pytest.mark.parametrize("task", ["codec", "denoise"])
def test_missing_default_models_say_make_models(tmp_path, capsys, monkeypatch, task):
    import runtime.defaults as d

    empty = tmp_path / "models" / "default"
    codec, llm = d.default_codec, d.default_llm
    monkeypatch.setattr(d, "default_codec", lambda root=empty: codec(root))
    monkeypatch.setattr(d, "default_llm", lambda root=empty: llm(root))
    rc = main(["--task", task, "--input", str(SPEECH), "--output", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "make models" in err[0], err


def _no_devices() -> bool:
    sd = pytest.importorskip("sounddevice")
    return len(sd.query_devices()) == 0


def test_missing_microphone_is_one_line_listing_devices(bundle, tmp_path, capsys):
    """No sound card here: the default input does not exist; on any machine device 9999 does not."""
    device = [] if _no_devices() else ["--device", "9999"]
    rc = _run(["--task", "codec", "--codec", str(bundle), "--output", str(tmp_path / "o.wav"), *device])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("error: no ") and "devices:" in err[0] and "--input FILE" in err[0]
    assert not (tmp_path / "o.wav").exists()


def test_missing_speaker_is_one_line(bundle, capsys):
    device = [] if _no_devices() else ["--device", "9999"]
    rc = _run(["--task", "codec", "--codec", str(bundle), "--input", str(SPEECH), "--fast", *device])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "--output FILE.wav" in err[0], err


def test_list_devices_and_usage_errors(capsys):
    assert main(["--list-devices"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["--task", "codec", "--input", "mic", "--fast"]) == 1
    assert "--fast needs --input FILE" in capsys.readouterr().err
    assert main([]) == 1 and "pass --task" in capsys.readouterr().err
    assert main(["--task", "codec", "--input", "mic", "--gather", "2"]) == 1
    assert "more than 1 only for --task denoise" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "runtime.stream", "--task", "codec", "--codec", str(tmp_path / "nope"),
           "--input", str(SPEECH), "--output", str(tmp_path / "o.wav")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_stream_runs_without_torch(bundle, tmp_path):
    """runtime.stream and its modules never import torch (the test_no_torch rule, for the new files)."""
    script = ("import sys; sys.modules['torch'] = None\n"
              "import runtime.stream, runtime.stream_app, runtime.stream_tasks, runtime.stream_pipeline\n"
              "import runtime.audio_io, runtime.audio_sinks, runtime.ring, runtime.stream_stats, runtime.defaults\n"
              "rc = runtime.stream.main(sys.argv[1:])\n"
              "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'codec', 'export', 'triton')\n"
              "             and sys.modules[m] is not None)\n"
              "print('RC', rc, 'LOADED', bad)\n")
    r = subprocess.run([sys.executable, "-c", script, "--task", "codec", "--codec", str(bundle), "--input", str(SPEECH),
                        "--output", str(tmp_path / "o.wav"), "--fast", "--quiet", "--threads", "1"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "RC 0 LOADED []" in r.stdout, r.stdout + r.stderr
