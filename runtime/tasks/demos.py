"""Demonstration sets: a folder with ``manifest.csv`` (+ optional ``info.json``) and its clips.

``manifest.csv`` has a header row; the columns a task reads are ``input``, ``output``, ``label`` and
``text`` (others are ignored). ``input``/``output`` are audio paths relative to the folder (absolute
paths work too). Per task:

| task       | required columns            | meaning                                        |
|------------|-----------------------------|------------------------------------------------|
| classify   | input, label                | clip -> its label                              |
| tts        | text, output                | input text ("an audio of 3") -> clip           |
| text2sound | label (or text), output     | sound label ("dog") -> clip                    |
| denoise    | input, output               | noisy clip -> clean clip (same duration)       |

``info.json`` (optional) records how the set was built: ``{"task": ..., "clip_seconds": ...,
"source": ...}``; a set built for another task is refused, and ``clip_seconds`` becomes the
task's default clip duration.
"""
from __future__ import annotations

import csv
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

MANIFEST = "manifest.csv"
INFO = "info.json"
COLUMNS = ("input", "output", "label", "text")
# Alternatives inside a tuple: at least one of them must be filled.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "classify": (("input",), ("label",)),
    "tts": (("text",), ("output",)),
    "text2sound": (("label", "text"), ("output",)),
    "denoise": (("input",), ("output",)),
}


class DemoError(ValueError):
    """A demonstration set is missing, malformed, or points to missing files."""


@dataclass(frozen=True)
class DemoRow:
    """One demonstration; ``line`` is its 1-based line in manifest.csv (for error messages)."""

    input: Path | None
    output: Path | None
    label: str | None
    text: str | None
    line: int

    def path(self, field: str) -> Path:
        """The ``input``/``output`` clip path, which the task's manifest check made sure exists."""
        value = getattr(self, field)
        if not isinstance(value, Path):
            raise DemoError(f"manifest line {self.line}: no {field} clip")
        return value

    def string(self, field: str) -> str:
        """The ``label``/``text`` column, which the task's manifest check made sure exists."""
        value = getattr(self, field)
        if not isinstance(value, str):
            raise DemoError(f"manifest line {self.line}: no {field}")
        return value


@dataclass(frozen=True)
class DemoSet:
    path: Path
    rows: tuple[DemoRow, ...]
    info: dict

    @property
    def labels(self) -> list[str]:
        """Sorted unique labels."""
        return sorted({r.label for r in self.rows if r.label})

    def by_label(self) -> "OrderedDict[str, list[DemoRow]]":
        out: OrderedDict[str, list[DemoRow]] = OrderedDict((lab, []) for lab in self.labels)
        for r in self.rows:
            if r.label:
                out[r.label].append(r)
        return out

    def select_per_label(self, shots: int | None) -> list[DemoRow]:
        """The first ``shots`` rows of every label (all if None), round-robin over sorted labels
        (shot 1 of each label, then shot 2 ...), so no label's demonstrations are all last."""
        groups = self.by_label()
        if len(groups) < 2:
            raise DemoError(f"{self.path / MANIFEST}: classification needs at least 2 labels, "
                            f"found {list(groups)}")
        k = max(len(g) for g in groups.values()) if shots is None else shots
        short = {lab: len(g) for lab, g in groups.items() if len(g) < k}
        if shots is not None and short:
            raise DemoError(f"{self.path / MANIFEST}: {shots} shots per label asked, but labels {short} have "
                            "fewer demonstrations")
        return [g[i] for i in range(k) for g in groups.values() if i < len(g)]

    def select_first(self, shots: int | None) -> list[DemoRow]:
        if shots is not None and shots > len(self.rows):
            raise DemoError(f"{self.path / MANIFEST}: {shots} shots asked, the set has {len(self.rows)} rows")
        return list(self.rows[:shots])


def _path(folder: Path, value: str) -> Path | None:
    value = value.strip()
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else folder / p


def read_info(folder: Path) -> dict:
    p = folder / INFO
    if not p.is_file():
        return {}
    try:
        info = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DemoError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise DemoError(f"{p} must hold a JSON object")
    return info


def load_demo_set(folder: str | Path, task: str | None = None) -> DemoSet:
    """Read and validate a demonstration set; with ``task``, check its required columns and files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DemoError(f"demonstration set {folder} does not exist or is not a directory "
                        "(build sets with python -m scripts.make_demos)")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise DemoError(f"{mpath} is missing: a demonstration set needs a manifest.csv with columns "
                        f"{', '.join(COLUMNS)} (see docs/tasks.md)")
    info = read_info(folder)
    if task and info.get("task") and info["task"] != task:
        raise DemoError(f"{folder} is a {info['task']} demonstration set, not a {task} one")
    rows = _read_rows(mpath, folder)
    if task:
        _check_rows(mpath, rows, REQUIRED[task])
    return DemoSet(folder, tuple(rows), info)


def _read_rows(mpath: Path, folder: Path) -> list[DemoRow]:
    try:
        with open(mpath, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            if not set(header) & set(COLUMNS):
                raise DemoError(f"{mpath}: header {header} has none of the columns {', '.join(COLUMNS)}")
            rows = []
            for i, raw in enumerate(reader, start=2):
                raw = {(k or "").strip(): (v or "") for k, v in raw.items()}
                rows.append(DemoRow(_path(folder, raw.get("input", "")), _path(folder, raw.get("output", "")),
                                    raw.get("label", "").strip() or None, raw.get("text", "").strip() or None, i))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DemoError(f"{mpath} is not a readable CSV file: {e}") from None
    if not rows:
        raise DemoError(f"{mpath} lists no demonstrations")
    return rows


def _check_rows(mpath: Path, rows: Sequence[DemoRow], required: tuple[tuple[str, ...], ...]) -> None:
    for r in rows:
        for alts in required:
            if all(getattr(r, c) is None for c in alts):
                raise DemoError(f"{mpath} line {r.line}: column {' or '.join(alts)} is empty or missing")
        for p in (r.input, r.output):
            if p is not None and not p.is_file():
                raise DemoError(f"{mpath} line {r.line}: audio file {p} does not exist")


def write_demo_set(folder: str | Path, rows: Sequence[dict], info: dict) -> Path:
    """Write ``manifest.csv`` (columns in `COLUMNS` order, those any row uses) and ``info.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cols = [c for c in COLUMNS if any(r.get(c) for r in rows)]
    with open(folder / MANIFEST, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder
