"""Label / transcript text of a training clip, for the layer-1 semantic loss.

The paper pairs speech with ASR transcripts and sound clips with captions; here the text comes from
what the public datasets ship beside their audio:

- FSDD ``{digit}_{speaker}_{take}.wav`` -> the digit's name ("zero" .. "nine");
- ESC-50 ``audio/*.wav`` with ``meta.csv`` beside ``audio/`` -> the category ("sea waves");
- RAVDESS ``audio/*.wav`` with ``labels.csv`` (column ``statement``) beside ``audio/``, or, without
  it, the statement code of the RAVDESS file name (``03-01-EE-II-SS-RR-AA``);
- LibriSpeech ``{spk}-{chapter}.trans.txt`` beside the audio (lines ``UTTID TEXT``); LibriTTS
  ``{stem}.normalized.txt``; a generic one-line ``{stem}.lab``.

A same-stem ``.txt`` is deliberately *not* read: the shared LibriSpeech sample's ``.txt`` files are
attributions, not transcripts. Anything else has no text (None) and skips the semantic loss.
"""
from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_FSDD_RE = re.compile(r"^(\d)_[A-Za-z]+_\d+$")
_RAVDESS_RE = re.compile(r"^\d\d-\d\d-\d\d-\d\d-(\d\d)-\d\d-\d\d$")


def clip_text(path: str | Path) -> str | None:
    """The text describing ``path`` (see module docstring), or None when there is none."""
    path = Path(path).resolve()
    for finder in (_csv_label, _fsdd, _ravdess_name, _sidecar):
        text = finder(path)
        if text:
            return " ".join(text.split())
    return None


def _fsdd(path: Path) -> str | None:
    m = _FSDD_RE.match(path.stem)
    return DIGITS[int(m.group(1))] if m else None


def _ravdess_name(path: Path) -> str | None:
    m = _RAVDESS_RE.match(path.stem)
    return RAVDESS_STATEMENTS.get(m.group(1)) if m else None


def _csv_label(path: Path) -> str | None:
    """ESC-50 (meta.csv: category) or RAVDESS (labels.csv: statement) tables next to ``audio/``."""
    for table_dir in (path.parent.parent, path.parent):
        for name, column in (("meta.csv", "category"), ("labels.csv", "statement")):
            table = _read_table(table_dir / name, column)
            if path.name in table:
                return table[path.name].replace("_", " ")
    return None


@lru_cache(maxsize=64)
def _read_table(csv_path: Path, column: str) -> dict[str, str]:
    """filename -> column value of a dataset CSV ({} when missing or without those columns)."""
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "filename" not in reader.fieldnames or column not in reader.fieldnames:
            return {}
        return {row["filename"]: row[column] for row in reader if row.get(column)}


def _sidecar(path: Path) -> str | None:
    stem = path.name.split(".")[0]  # "198-209-0000.hq.ogg" -> "198-209-0000"
    for name in (f"{stem}.normalized.txt", f"{stem}.lab"):
        side = path.parent / name
        if side.is_file():
            lines = side.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return lines[0] if len(lines) == 1 else None
    parts = stem.split("-")
    if len(parts) == 3:
        return _librispeech_transcripts(path.parent / f"{parts[0]}-{parts[1]}.trans.txt").get(stem)
    return None


@lru_cache(maxsize=256)
def _librispeech_transcripts(trans_path: Path) -> dict[str, str]:
    if not trans_path.is_file():
        return {}
    out = {}
    for line in trans_path.read_text(encoding="utf-8", errors="replace").splitlines():
        utt, _, text = line.strip().partition(" ")
        if text:
            out[utt] = text.lower()  # LibriSpeech transcripts are upper case
    return out
