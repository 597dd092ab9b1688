"""The runtime imports and runs the codec with torch made unimportable (``sys.modules["torch"] = None``).

Runs in a subprocess so this process's own torch import (used to export the fixture bundle) cannot
leak into the check.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from export_fixtures import REPO, tiny_export  # noqa: E402

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    import soundfile as sf
    import runtime, runtime.codec, runtime.codec_cli, runtime.bundle, runtime.tokens_file, runtime.audio
    from runtime.codec import CodecSession
    bundle, wav, out = sys.argv[1:4]
    s = CodecSession(bundle, provider="cpu", threads=1)
    pcm = np.sin(np.arange(9000) * 0.05).astype(np.float32) * 0.3
    sf.write(wav, pcm, 22050)
    tokens = s.encode_file(wav)
    s.decode_to_file(tokens, out)
    stream = s.new_stream()
    groups = stream.encode(pcm[:5000]) + stream.encode(pcm[5000:]) + stream.flush()
    audio = stream.decode(groups)
    assert len(audio) == len(groups) * 1920 and np.isfinite(audio).all()
    assert runtime.codec_cli.main(["roundtrip", wav, out, "--codec", bundle, "--force"]) == 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "codec", "export", "triton")
                    and sys.modules[m] is not None)
    print("LOADED", loaded)
""")


def test_runtime_runs_without_torch(tmp_path_factory, tmp_path):
    bundle = tiny_export(tmp_path_factory) / "bundle"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), str(tmp_path / "in.wav"),
                           str(tmp_path / "out.wav")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout, proc.stdout
    assert (tmp_path / "out.wav").stat().st_size > 44
