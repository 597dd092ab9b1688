"""The command-line tools on bad input and Ctrl-C, run as real subprocesses (``python -m ...``).

Standard: bad input -> one ``error: ...`` line on stderr, exit 1, no traceback; Ctrl-C -> one
``interrupted`` line, exit 130, no traceback and no half-written output; ``codec.train`` saves a
checkpoint on Ctrl-C that ``--resume`` continues from.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixtures export a bundle; the runtime under test is torch-free
sf = pytest.importorskip("soundfile")

from export_fixtures import REPO, tiny_export  # noqa: E402
from fixtures_llm import DATA, tiny_gguf  # noqa: E402,F401


def cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, message: str) -> None:
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], p.stderr


def interrupt_when(proc: subprocess.Popen, ready, timeout: float = 60) -> tuple[str, str]:
    """Send SIGINT once ``ready()`` holds (the tool is past start-up, mid-work); returns (stdout, stderr)."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"exited early: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "never became ready"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=60)


def loaded(proc: subprocess.Popen, library: str) -> bool:
    """Whether ``library`` is mapped into the process (its import happens inside the CLI's main)."""
    try:
        return library in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory) / "bundle"


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Bad and awkward inputs: missing, a directory, 0 bytes, random bytes, 0 samples, stereo 44.1 kHz,
    50 ms (shorter than one 120 ms code group)."""
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    (d / "dir.wav").mkdir()
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.wav").write_bytes(rng.bytes(4000))
    sf.write(d / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    t = np.arange(int(44100 * 1.5)) / 44100
    sf.write(d / "stereo44.wav", 0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], 1),
             44100)
    sf.write(d / "short.wav", 0.1 * rng.standard_normal(800).astype(np.float32), 16000)
    return d


@pytest.mark.parametrize("name, message", [
    pytest.param("missing.wav", "does not exist", id="missing"),
    pytest.param("dir.wav", "is a directory", id="directory"),
    pytest.param("empty.wav", "is empty (0 bytes)", id="empty"),
    pytest.param("corrupt.wav", "corrupt or unsupported format", id="corrupt"),
    pytest.param("zero.wav", "contains no samples", id="zero-samples"),
])
def test_codec_encode_bad_audio(bundle, audio, tmp_path, name, message):
    out = tmp_path / "x.tokens"
    assert_one_line_error(cli("runtime.codec", "encode", audio / name, out, "--codec", bundle), message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output, force, message", [
    pytest.param("nodir/x.wav", False, "directory", id="missing-parent"),
    pytest.param("dir.wav", True, "is a directory", id="output-is-directory"),
    pytest.param("stereo44.wav", False, "pass --force", id="exists"),
])
def test_codec_output_checked_before_work(bundle, audio, output, force, message):
    args = ["runtime.codec", "roundtrip", audio / "stereo44.wav", audio / output, "--codec", bundle]
    assert_one_line_error(cli(*args, *(["--force"] if force else [])), message)


@pytest.mark.parametrize("name, samples", [pytest.param("stereo44.wav", 24000, id="stereo-44k"),
                                           pytest.param("short.wav", 800, id="shorter-than-a-group")])
def test_codec_roundtrip_awkward_audio_works(bundle, audio, tmp_path, name, samples):
    out = tmp_path / "out.wav"
    p = cli("runtime.codec", "roundtrip", audio / name, out, "--codec", bundle)
    assert p.returncode == 0, p.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, samples)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.wav"]  # no temp file left


def test_bad_gguf_files_are_one_line_errors(audio, tmp_path):
    not_gguf = audio / "corrupt.wav"
    out = tmp_path / "llm.gguf"
    assert_one_line_error(cli("scripts.tiny_llm", "--out", out, "--vocab", not_gguf), "not a readable GGUF")
    assert not out.exists()
    pytest.importorskip("llama_cpp")
    assert_one_line_error(cli("benchmarks.llm_speed", "--model", not_gguf, "--prefix-tokens", 8, "--query-tokens", 4,
                              "--gen-tokens", 4, "--reps", 1), "is not a GGUF file")


def test_codec_quality_skips_a_too_short_clip(bundle, audio):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    p = cli("benchmarks.codec_quality", "--codec", bundle, "--files", audio / "short.wav", audio / "stereo44.wav")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "short.wav is 0.050 s long" in p.stderr and "| 1 |" in p.stdout


@pytest.mark.parametrize("delay", [pytest.param(0.0, id="while-onnxruntime-loads"),
                                   pytest.param(1.0, id="mid-work")])
def test_ctrl_c_during_roundtrip_leaves_no_output(bundle, tmp_path, delay):
    long = tmp_path / "long.wav"
    sf.write(long, 0.1 * np.random.default_rng(0).standard_normal(16000 * 600).astype(np.float32), 16000)
    out = tmp_path / "out.wav"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.codec", "roundtrip", str(long), str(out),
                             "--codec", str(bundle), "--threads", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    since: list[float] = []

    def ready() -> bool:
        if not since and loaded(proc, "onnxruntime"):
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= delay

    _, err = interrupt_when(proc, ready)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted", err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["long.wav"]


def _fsdd_list(path: Path) -> Path:
    files = sorted((DATA / "fsdd" / "recordings").glob("*_jackson_5.wav"))
    if not files:
        pytest.skip(f"shared FSDD recordings missing under {DATA}")
    path.write_text("\n".join(map(str, files)) + "\n")
    return path


def test_ctrl_c_in_training_saves_a_checkpoint_that_resume_continues(tiny_gguf, tmp_path):  # noqa: F811
    data, out = _fsdd_list(tmp_path / "train.lst"), tmp_path / "run"
    args = [sys.executable, "-m", "codec.train", "--preset", "tiny", "--llm", str(tiny_gguf), "--data", str(data),
            "--out", str(out), "--steps", "1000", "--batch-size", "2", "--segment-seconds", "0.24", "--device", "cpu",
            "--word-table-size", "500", "--log-every", "1", "--ckpt-every", "1000", "--threads", "1",
            "--no-progress", "--teacher", "none", "--no-adversarial"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "metrics.csv"
    _, err = interrupt_when(proc, lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 3)
    assert proc.returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: checkpoint at step ") and "--resume" in last, err
    step = int(last.split("step ")[1].split("/")[0])
    assert step >= 2 and (out / "train_state.pt").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("*.tmp"))
    p = subprocess.run([*args, "--resume", "--stop-after", "1"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"trained {step + 1}/1000 steps" in p.stdout
