"""``python -m scripts.make_demos``: build demonstration sets (and labelled views) from ../shared/data.

    python -m scripts.make_demos --data ../shared/data --out demos/ [--labelled-out /tmp/labelled]

Writes one folder per set under --out, each with 16 kHz mono clips cut/zero-padded to a fixed
duration, ``manifest.csv`` and ``info.json`` (see runtime/tasks/demos.py):

| set                 | task       | source                                 | clip (flag)                 |
|---------------------|------------|----------------------------------------|-----------------------------|
| classify-esc50      | classify   | ESC-50, --per-label clips per class    | 1.0 s (--classify-seconds)  |
| classify-ravdess    | classify   | RAVDESS emotions, --per-label per class| 1.0 s (--classify-seconds)  |
| tts-fsdd            | tts        | FSDD digits 0-3, "an audio of k"       | 0.72 s (--tts-seconds)      |
| denoise-voicebank   | denoise    | VoiceBank-DEMAND noisy -> clean pairs  | 0.96 s (--denoise-seconds)  |
| text2sound-esc50    | text2sound | ESC-50 label -> clip                   | 1.0 s (--text2sound-seconds)|

--labelled-out DIR writes symlinks (--copy: copies) in the ``DIR/<label>/*.wav`` layout that
``benchmarks.fewshot`` reads: ``esc50/``, ``ravdess/``, ``fsdd/`` (digits, upstream test takes 0-4),
and ``voicebank/{clean,noisy}/`` with the pairs *not* used as denoise demonstrations. The data
carry their own licences (../shared/data/README.md): keep these folders out of the repository.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

from runtime.audio import AudioError, read_audio, write_audio
from runtime.cli import fatal, run_cli
from runtime.tasks.common import crop_start, fix_length
from runtime.tasks.demos import MANIFEST, DemoError, write_demo_set

RATE = 16000
SETS = ("classify-esc50", "classify-ravdess", "tts-fsdd", "denoise-voicebank", "text2sound-esc50")
GROUP = 1920  # samples per codec group (4 frames x hop 480): denoise chunks are whole groups


def _csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DemoError(f"{path} is missing (is --data the shared data folder?)")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Per-clip ESC-50 licences that allow redistribution in this repository (the dataset as a whole is
# CC BY-NC 3.0, but each clip keeps its Freesound licence: esc50/clip_licenses.tsv).
REDISTRIBUTABLE = ("CC0", "CC-BY")


def esc50_licenses(data: Path) -> dict[str, str]:
    """ESC-50 file name -> its attribution line (ends with the licence in brackets, e.g. ``[CC0]``)."""
    path = data / "esc50" / "clip_licenses.tsv"
    if not path.is_file():
        return {}
    rows = (line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)
    return {name: text.strip() for name, text in rows}


def clip_license(attribution: str) -> str:
    return attribution.rsplit("[", 1)[-1].rstrip("]") if attribution.endswith("]") else "unknown"


def esc50_by_label(data: Path, redistributable: bool = False) -> "OrderedDict[str, list[Path]]":
    """ESC-50 clips per category; ``redistributable`` keeps only CC0 / CC-BY clips."""
    licenses = esc50_licenses(data) if redistributable else {}
    out: OrderedDict[str, list[Path]] = OrderedDict()
    for row in sorted(_csv(data / "esc50" / "meta.csv"), key=lambda r: (r["category"], r["filename"])):
        if redistributable and clip_license(licenses.get(row["filename"], "")) not in REDISTRIBUTABLE:
            continue
        out.setdefault(row["category"], []).append(data / "esc50" / "audio" / row["filename"])
    return out


def write_attribution(folder: Path, header: str, clips: dict[str, str]) -> None:
    """``ATTRIBUTION.md``: the set's source and licence, then one line per clip (clip -> origin)."""
    lines = [f"# Attribution\n\n{header}\n"] + [f"- `{clip}`: {origin}" for clip, origin in sorted(clips.items())]
    (folder / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def ravdess_by_label(data: Path) -> "OrderedDict[str, list[Path]]":
    out: OrderedDict[str, list[Path]] = OrderedDict()
    for row in sorted(_csv(data / "ravdess" / "labels.csv"), key=lambda r: (r["emotion"], r["filename"])):
        out.setdefault(row["emotion"], []).append(data / "ravdess" / "audio" / row["filename"])
    return out


def fsdd_by_digit(data: Path, takes: range, speakers: Sequence[str] | None = None) -> "OrderedDict[str, list[Path]]":
    folder = data / "fsdd" / "recordings"
    if not folder.is_dir():
        raise DemoError(f"{folder} is missing (is --data the shared data folder?)")
    out: OrderedDict[str, list[Path]] = OrderedDict()
    for p in sorted(folder.glob("*.wav")):
        digit, speaker, take = p.stem.split("_")
        if int(take) in takes and (speakers is None or speaker in speakers):
            out.setdefault(digit, []).append(p)
    return OrderedDict(sorted(out.items()))


def voicebank_pairs(data: Path) -> list[str]:
    return [r["filename"] for r in _csv(data / "voicebank_demand" / "pairs.csv")]


class Writer:
    """Writes fixed-length clips into one set folder and collects its manifest rows."""

    def __init__(self, folder: Path, seconds: float, crop: str):
        self.folder, self.n, self.crop = folder, int(round(seconds * RATE)), crop
        self.rows: list[dict] = []
        (folder / "clips").mkdir(parents=True, exist_ok=True)

    def clip(self, src: Path, name: str, start: int | None = None) -> str:
        pcm = read_audio(src, RATE)
        write_audio(self.folder / "clips" / name, fix_length(pcm, self.n, self.crop, start), RATE)
        return f"clips/{name}"


def _prepare(out: Path, name: str, force: bool) -> Path:
    folder = out / name
    if folder.exists():
        if not force:
            raise DemoError(f"{folder} exists (pass --force to rebuild it)")
        if not (folder / MANIFEST).is_file():
            raise DemoError(f"{folder} is not a demonstration set (no {MANIFEST}); refusing to replace it")
    return folder


def _build_in_place(folder: Path, build: Callable[[Path], int]) -> int:
    """Build a set in ``folder.partial`` and rename it into place when complete: an error or Ctrl-C
    never leaves a half-built set (which a rerun would refuse to replace) under the real name."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        n = build(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():  # --force, checked by _prepare
        shutil.rmtree(folder)
    staging.rename(folder)
    return n


def build_classify(folder: Path, groups: "OrderedDict[str, list[Path]]", per_label: int, seconds: float,
                   crop: str, source: str, origins: dict[str, str] | None = None) -> int:
    w = Writer(folder, seconds, crop)
    credits = {}
    for label, paths in groups.items():
        for p in paths[:per_label]:
            w.rows.append({"input": w.clip(p, f"{label}_{p.stem}.wav"), "label": label})
            credits[w.rows[-1]["input"]] = (origins or {}).get(p.name, f"{p.name} of {source}")
    write_demo_set(folder, w.rows, {"task": "classify", "clip_seconds": seconds, "crop": crop, "source": source})
    write_attribution(folder, f"Clips cut from {source}.", credits)
    return len(w.rows)


def build_tts(folder: Path, data: Path, per_digit: int, seconds: float, crop: str) -> int:
    w = Writer(folder, seconds, crop)
    digits = fsdd_by_digit(data, range(5, 50), speakers=("jackson",))  # takes 0-4 are the test split
    for digit in ("0", "1", "2", "3"):
        for p in digits.get(digit, [])[:per_digit]:
            w.rows.append({"text": f"an audio of {digit}", "output": w.clip(p, p.name)})
    source = "FSDD (CC BY-SA 4.0), speaker jackson, digits 0-3"
    write_demo_set(folder, w.rows, {"task": "tts", "clip_seconds": seconds, "crop": crop, "source": source})
    write_attribution(folder, "Free Spoken Digit Dataset (Jakobovski et al., github.com/Jakobovski/"
                      "free-spoken-digit-dataset), CC BY-SA 4.0; resampled from 8 kHz to 16 kHz and cut. "
                      "This folder is shared under the same licence.",
                      {r["output"]: "FSDD recording of the same name" for r in w.rows})
    return len(w.rows)


def build_denoise(folder: Path, data: Path, names: Sequence[str], seconds: float, crop: str) -> int:
    n_groups = -(-int(round(seconds * RATE)) // GROUP)
    w = Writer(folder, n_groups * GROUP / RATE, crop)
    vb = data / "voicebank_demand"
    for name in names:
        clean = read_audio(vb / "clean" / name, RATE)
        start = crop_start(len(clean), w.n, crop, clean)  # same window for both sides of the pair
        w.rows.append({"input": w.clip(vb / "noisy" / name, f"noisy_{name}", start),
                       "output": w.clip(vb / "clean" / name, f"clean_{name}", start)})
    write_demo_set(folder, w.rows, {"task": "denoise", "clip_seconds": w.n / RATE, "crop": crop,
                                    "source": "VoiceBank-DEMAND test pairs (CC BY 4.0)"})
    write_attribution(folder, "Noisy speech database (VoiceBank-DEMAND), Valentini-Botinhao et al. 2017, "
                      "University of Edinburgh, CC BY 4.0 (doi:10.7488/ds/2117); clips cut to whole codec groups.",
                      {c: f"test-set pair {c.split('_', 1)[1]}" for r in w.rows for c in (r["input"], r["output"])})
    return len(w.rows)


def build_text2sound(folder: Path, groups: "OrderedDict[str, list[Path]]", per_label: int, seconds: float,
                     crop: str, source: str, origins: dict[str, str] | None = None) -> int:
    w = Writer(folder, seconds, crop)
    credits = {}
    for label, paths in groups.items():
        for p in paths[:per_label]:
            w.rows.append({"label": label, "output": w.clip(p, f"{label}_{p.stem}.wav")})
            credits[w.rows[-1]["output"]] = (origins or {}).get(p.name, f"{p.name} of {source}")
    write_demo_set(folder, w.rows, {"task": "text2sound", "clip_seconds": seconds, "crop": crop, "source": source})
    write_attribution(folder, f"Clips cut from {source}.", credits)
    return len(w.rows)


def _link(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def write_labelled(out: Path, data: Path, held_out_pairs: Sequence[str], copy: bool) -> dict[str, int]:
    """``out/<dataset>/<label>/*.wav`` views (symlinks or copies); returns files per dataset."""
    counts = {}
    views: dict[str, Callable[[], "OrderedDict[str, list[Path]]"]] = {
        "esc50": lambda: esc50_by_label(data), "ravdess": lambda: ravdess_by_label(data),
        "fsdd": lambda: fsdd_by_digit(data, range(0, 5))}
    for name, get in views.items():
        groups = get()
        for label, paths in groups.items():
            for p in paths:
                _link(p, out / name / label / p.name, copy)
        counts[name] = sum(len(v) for v in groups.values())
    vb = data / "voicebank_demand"
    for fname in held_out_pairs:
        for side in ("clean", "noisy"):
            _link(vb / side / fname, out / "voicebank" / side / fname, copy)
    counts["voicebank"] = len(held_out_pairs)
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.make_demos", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write the demonstration sets into")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="which sets to build")
    p.add_argument("--labelled-out", type=Path, default=None, help="also write DIR/<dataset>/<label>/*.wav views")
    p.add_argument("--copy", action="store_true", help="copy files into --labelled-out instead of symlinking")
    p.add_argument("--per-label", type=int, default=4, help="classify demonstrations per label")
    p.add_argument("--tts-per-digit", type=int, default=5, help="tts demonstrations per digit (0-3)")
    p.add_argument("--text2sound-per-label", type=int, default=1, help="text2sound demonstrations per label")
    p.add_argument("--denoise-pairs", type=int, default=4, help="denoise demonstration pairs")
    p.add_argument("--classify-seconds", type=float, default=1.0)
    p.add_argument("--tts-seconds", type=float, default=0.72)
    p.add_argument("--denoise-seconds", type=float, default=0.96, help="rounded up to whole 120 ms groups")
    p.add_argument("--text2sound-seconds", type=float, default=1.0)
    p.add_argument("--crop", choices=("start", "loudest"), default="loudest",
                   help="part of a longer recording to keep (ESC-50 clips are 5 s, often silent at first)")
    p.add_argument("--force", action="store_true", help="rebuild sets that exist")
    p.add_argument("--redistributable", action="store_true",
                   help="only clips whose licence allows shipping them (ESC-50: CC0 / CC-BY clips), as in "
                        "models/default/demos")
    return p


def run(a: argparse.Namespace) -> None:
    for name in ("per_label", "tts_per_digit", "text2sound_per_label", "denoise_pairs"):
        if getattr(a, name) < 1:
            raise DemoError(f"--{name.replace('_', '-')} must be >= 1")
    if min(a.classify_seconds, a.tts_seconds, a.denoise_seconds, a.text2sound_seconds) <= 0:
        raise DemoError("clip durations must be positive")
    pairs = voicebank_pairs(a.data)
    if a.denoise_pairs >= len(pairs):
        raise DemoError(f"--denoise-pairs {a.denoise_pairs}: VoiceBank has only {len(pairs)} pairs")
    esc_source = ("ESC-50 (Piczak 2015), CC0 / CC BY clips only (per-clip Freesound licences)" if a.redistributable
                  else "ESC-50 (CC BY-NC 3.0; clip licences in esc50/clip_licenses.tsv)")
    origins = esc50_licenses(a.data)
    builders = {
        "classify-esc50": lambda f: build_classify(f, esc50_by_label(a.data, a.redistributable), a.per_label,
                                                   a.classify_seconds, a.crop, esc_source, origins),
        "classify-ravdess": lambda f: build_classify(f, ravdess_by_label(a.data), a.per_label, a.classify_seconds,
                                                     a.crop, "RAVDESS (CC BY-NC-SA 4.0)"),
        "tts-fsdd": lambda f: build_tts(f, a.data, a.tts_per_digit, a.tts_seconds, a.crop),
        "denoise-voicebank": lambda f: build_denoise(f, a.data, pairs[:a.denoise_pairs], a.denoise_seconds, a.crop),
        "text2sound-esc50": lambda f: build_text2sound(f, esc50_by_label(a.data, a.redistributable),
                                                       a.text2sound_per_label, a.text2sound_seconds, a.crop,
                                                       esc_source, origins),
    }
    if a.redistributable and "classify-ravdess" in a.sets:
        raise DemoError("RAVDESS is CC BY-NC-SA: leave classify-ravdess out of --redistributable sets")
    folders = {name: _prepare(a.out, name, a.force) for name in a.sets}  # refuse before writing anything
    for name, folder in folders.items():
        print(f"{folder}: {_build_in_place(folder, builders[name])} demonstrations")
    if a.labelled_out is not None:
        counts = write_labelled(a.labelled_out, a.data, pairs[a.denoise_pairs:], a.copy)
        print(f"{a.labelled_out}: " + ", ".join(f"{k} {v} files" for k, v in counts.items()))


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        run(a)
    except (DemoError, AudioError) as e:
        return fatal(str(e))
    except OSError as e:
        return fatal(f"{e.filename or ''}: {e.strerror or e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
