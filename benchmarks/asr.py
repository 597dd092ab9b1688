"""Whisper base ASR judge (faster-whisper, CPU int8) and word error rate, with no download at run time.

The model comes from two PyPI packages (a CTranslate2 conversion of Whisper base, MIT), found by
``runtime.whisper_base.model_dir()``. ``Judge`` loads it lazily.
Text normalisation for WER: lower case, punctuation dropped, digits 0-9 spelt as words.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

# The model's location is shared with the consistency teacher (codec.teacher): one implementation.
from runtime.whisper_base import INSTALL, MODEL_SHA256, AsrUnavailable, available, model_dir  # noqa: F401

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_HOMOPHONES = {"oh": "zero", "to": "two", "too": "two", "for": "four", "ate": "eight", "won": "one",
               "tree": "three", "free": "three", "sex": "six", "nein": "nine", "fore": "four"}


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
