"""The project's own train / held-out split of ``../shared/data`` (quality claims use held-out only).

Held out, never trained on:
- every ``vcc2018`` speaker (12 speakers, 420 clips),
- 40 of the 251 ``librispeech_train`` speakers: speaker ids sorted numerically, every 6th from the
  4th (indices 3, 9, 15, ...), first 40,
- ``librispeech`` (test-other), ``speech16k`` (CMU ARCTIC), ``voicebank_demand`` (denoising pairs),
  ``esc50`` (the classification episodes' clips), ``fsdd`` (8 kHz digits: TTS demonstrations).
Trained on: the other 211 ``librispeech_train`` speakers, ``speechocean762``, ``vctk_p239``,
``ljspeech``, ``ravdess``, ``esc50_more``, ``noise16k``.

``python -m codec.splits --data ../shared/data --out runs/splits`` writes one list file per training
source (``train_<name>.txt``, for ``codec.train --data ... --balanced``) and ``heldout_<name>.txt``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")
TRAIN_SOURCES = ("librispeech_train", "speechocean762", "vctk_p239", "ljspeech", "ravdess", "esc50_more",
                 "noise16k")
HELDOUT_SOURCES = ("vcc2018", "librispeech", "speech16k", "voicebank_demand/clean", "esc50")
N_HELDOUT_LIBRISPEECH = 40


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file())


def librispeech_speaker(path: Path) -> int:
    return int(path.name.split("-")[0])


def heldout_librispeech_speakers(files: Sequence[Path]) -> set[int]:
    """The 40 held-out ``librispeech_train`` speakers (see the module docstring for the rule)."""
    speakers = sorted({librispeech_speaker(p) for p in files})
    return set(speakers[3::6][:N_HELDOUT_LIBRISPEECH])


def split(data: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """``(train, heldout)``: source name -> files."""
    train: dict[str, list[Path]] = {}
    heldout: dict[str, list[Path]] = {}
    for name in TRAIN_SOURCES:
        files = audio_files(data / name)
        if name == "librispeech_train":
            held = heldout_librispeech_speakers(files)
            heldout["librispeech_train"] = [p for p in files if librispeech_speaker(p) in held]
            files = [p for p in files if librispeech_speaker(p) not in held]
        train[name] = files
    for name in HELDOUT_SOURCES:
        heldout[name.replace("/", "_")] = audio_files(data / name)
    return train, heldout


def write_lists(out: Path, groups: dict[str, list[Path]], prefix: str) -> list[Path]:
    """One list file per group, paths relative to ``out`` (how ``codec.data`` reads list files)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, files in groups.items():
        path = out / f"{prefix}_{name}.txt"
        rel = [os.path.relpath(p.resolve(), out.resolve()) for p in files]
        path.write_text(f"# {prefix} split of {name} (codec/splits.py), {len(files)} files\n" + "\n".join(rel) + "\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m codec.splits", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("runs/splits"))
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: data folder {args.data} does not exist")
        return 1
    train, heldout = split(args.data)
    for path in write_lists(args.out, train, "train") + write_lists(args.out, heldout, "heldout"):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
