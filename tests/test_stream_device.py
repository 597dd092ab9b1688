"""A real audio path: a PulseAudio null sink is a clock-paced virtual device that PortAudio opens like
a sound card (../shared/docs/environment-notes.md). A file played into the sink is captured by
``runtime.stream --input mic --device pulse --task codec``; the codec output played to the sink is
recorded from its monitor. Skips with the reason when PulseAudio is not installed or cannot start."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixture exports a bundle; the runtime itself is torch-free
pytest.importorskip("sounddevice", reason="sounddevice not installed")
sf = pytest.importorskip("soundfile")

from export_fixtures import DATA, REPO, bundle, session  # noqa: E402,F401  (fixtures)

from runtime.audio import read_audio  # noqa: E402

pytestmark = pytest.mark.audio_device
SPEECH = DATA / "speech16k" / "arctic_a0010.wav"


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A private PulseAudio daemon with a 16 kHz null sink ``vsink``; yields the client environment."""
    missing = [t for t in ("pulseaudio", "pactl", "paplay", "parec") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"PulseAudio is not installed ({', '.join(missing)} missing): apt-get install "
                    "pulseaudio pulseaudio-utils libasound2-plugins")
    root = tmp_path_factory.mktemp("pulse")
    (root / "run").mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(root / "run"), "HOME": str(root)}
    env["PULSE_SERVER"] = f"unix:{root / 'run' / 'pulse' / 'native'}"
    start = subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "-n",
                            "--load=module-null-sink sink_name=vsink rate=16000",
                            "--load=module-native-protocol-unix", "--load=module-always-sink"],
                           env=env, capture_output=True, text=True, timeout=30)
    ok = start.returncode == 0 and _wait_for_server(env)
    if not ok:
        pytest.skip(f"PulseAudio cannot start here: {start.stderr.strip().splitlines()[-1:]}")
    for cmd in (["pactl", "set-default-sink", "vsink"], ["pactl", "set-default-source", "vsink.monitor"]):
        subprocess.run(cmd, env=env, check=True, timeout=10)
    yield env
    subprocess.run(["pulseaudio", "-k"], env=env, capture_output=True, timeout=10)


def _wait_for_server(env: dict, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=10).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def _stream(env: dict, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "runtime.stream", "--task", "codec", "--threads", "1", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(p: subprocess.Popen, needle: str, seconds: float = 60.0) -> list[str]:
    """Read the child's stderr in a thread until ``needle`` appears; returns the lines list (still filling)."""
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        for ln in p.stderr:
            lines.append(ln)
            if needle in ln:
                seen.set()

    threading.Thread(target=pump, daemon=True).start()
    assert seen.wait(seconds), "".join(lines)
    return lines


def _wait_until_flowing(folder: Path, stem: str, seconds: float = 30.0) -> None:
    """Wait until the incrementally written ``--record-input`` file holds 0.3 s of audio: a PulseAudio
    capture stream delivers nothing for its first ~1.5 s here, and what is played meanwhile is lost."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if any(f.stat().st_size > 44 + 2 * 4800 for f in folder.glob(f".{stem}.partial-*")):
            return
        time.sleep(0.05)
    raise AssertionError("the capture stream never started delivering audio")


def _best_lag(x: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """The offset of ``ref`` inside ``x`` and the normalised correlation there."""
    c = np.correlate(x, ref, "valid")
    lag = int(np.argmax(c))
    seg = x[lag:lag + len(ref)]
    return lag, float(seg @ ref / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12))


def test_microphone_capture_from_a_null_sink(pulse, bundle, session, tmp_path):
    out, rec, stats = tmp_path / "out.wav", tmp_path / "rec.wav", tmp_path / "stats.json"
    p = _stream(pulse, "--codec", str(bundle), "--input", "mic", "--device", "pulse", "--output", str(out),
                "--record-input", str(rec), "--stats-json", str(stats))
    try:
        lines = _wait_for_line(p, "listening on")
        _wait_until_flowing(tmp_path, "rec")
        subprocess.run(["paplay", "--device=vsink", str(SPEECH)], env=pulse, check=True, timeout=60)
        time.sleep(0.7)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
    err = "".join(lines)
    assert p.returncode == 0 and "Traceback" not in err, err
    ref = read_audio(SPEECH, 16000)
    got_in, _ = sf.read(str(rec), dtype="float32")
    lag, corr = _best_lag(got_in, ref)
    assert corr > 0.98, f"the captured input does not contain the played file (corr {corr:.3f})"
    # The stream's output is the codec round trip of exactly what was captured ...
    got, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and len(got) == len(got_in)
    offline = np.clip(session.decode(session.encode(got_in))[:len(got_in)], -1, 1)
    assert np.abs(got - offline).max() <= 1e-3
    # ... and correlates with the offline round trip of the file placed where it was captured.
    placed = np.zeros_like(got_in)
    placed[lag:lag + len(ref)] = ref
    rt = session.decode(session.encode(placed))[:len(placed)]
    assert float(got @ rt / (np.linalg.norm(got) * np.linalg.norm(rt))) > 0.98
    d = json.loads(stats.read_text())
    assert d["end"] == "stopped" and d["dropped_chunks"] == 0 and d["end_to_end"]["n"] > 0
    assert 100.0 <= d["end_to_end"]["p50_ms"] < 1000.0  # one 120 ms group plus compute


def test_speaker_output_into_a_null_sink(pulse, bundle, session, tmp_path):
    raw = tmp_path / "monitor.f32"
    with open(raw, "wb") as f:
        rec = subprocess.Popen(["parec", "-d", "vsink.monitor", "--rate=16000", "--channels=1",
                                "--format=float32le", "--raw"], env=pulse, stdout=f)
        try:
            time.sleep(0.5)
            p = _stream(pulse, "--codec", str(bundle), "--input", str(SPEECH), "--device", "pulse", "--quiet")
            _, err = p.communicate(timeout=120)
            time.sleep(0.5)
        finally:
            rec.terminate()
            rec.wait(timeout=10)
    assert p.returncode == 0 and "Traceback" not in err, err
    captured = np.fromfile(raw, dtype="<f4")
    pcm = read_audio(SPEECH, 16000)
    rt = session.decode(session.encode(pcm))[:len(pcm)]
    half = rt[len(rt) // 2:]  # the sink may skip the start while PulseAudio's stream starts up
    _, corr = _best_lag(captured, half)
    assert corr > 0.9, f"the speaker output does not contain the codec round trip (corr {corr:.3f})"


def test_device_vanishing_mid_stream_keeps_the_output(pulse, bundle, tmp_path):
    """Killing the PulseAudio daemon under a running capture: one error line, exit 1, a valid file
    with everything captured until then. (Last in this module: the daemon is gone afterwards.)"""
    out, rec = tmp_path / "out.wav", tmp_path / "rec.wav"
    p = _stream(pulse, "--codec", str(bundle), "--input", "mic", "--device", "pulse", "--output", str(out),
                "--record-input", str(rec))
    lines = _wait_for_line(p, "listening on")
    _wait_until_flowing(tmp_path, "rec")
    time.sleep(0.5)
    subprocess.run(["pulseaudio", "-k"], env=pulse, capture_output=True, timeout=10)
    p.wait(timeout=60)
    time.sleep(0.2)
    err = "".join(lines)
    ours = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert p.returncode == 1 and "Traceback" not in err, err
    assert len(ours) == 1 and "stopped delivering audio" in ours[0]
    got, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and len(got) >= 0.3 * 16000 and len(got) == sf.info(str(rec)).frames
