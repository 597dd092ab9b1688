"""runtime.defaults: the shipped defaults resolve, and a missing or damaged one is a one-line error that
names the command that fixes it (the CLIs never load a wrong model)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import runtime.defaults as D


def test_the_shipped_defaults_resolve():
    assert D.default_llm().name == "llm.gguf" and (D.default_codec() / "manifest.json").is_file()
    for task in D.DEMO_TASKS:
        assert (D.default_demos(task) / "ATTRIBUTION.md").is_file()


def test_missing_or_damaged_llm_names_make_models(tmp_path):
    with pytest.raises(D.DefaultsError, match="missing: run `make models`"):
        D.default_llm(tmp_path)
    (tmp_path / "llm.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(D.DefaultsError, match="damaged.*delete it and run `make models`"):
        D.default_llm(tmp_path)
    with pytest.raises(D.DefaultsError, match="codec bundle .* missing: run `make models`"):
        D.default_codec(tmp_path)
    with pytest.raises(D.DefaultsError, match="git checkout -- models/default/demos"):
        D.default_demos("denoise", tmp_path)


def test_a_damaged_llm_is_refused_even_after_a_good_check(tmp_path):
    """The verified stamp is keyed by size + mtime: rewriting the file forces a new sha256 check."""
    good = D.DEFAULT_ROOT / D.LLM_FILE
    copy = tmp_path / D.LLM_FILE
    shutil.copyfile(good, copy)
    assert D.default_llm(tmp_path) == copy
    with open(copy, "r+b") as f:  # same size, one byte flipped
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(D.DefaultsError, match="damaged"):
        D.default_llm(tmp_path)


@pytest.mark.parametrize("cli", ["runtime.run", "benchmarks.fewshot"])
def test_clis_without_defaults_say_make_models(cli, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(D, "DEFAULT_ROOT", tmp_path / "nowhere")
    wav = Path(__file__).resolve().parents[1] / "examples" / "dog_4-199261-A-0.wav"
    if cli == "runtime.run":
        from runtime.run import main

        args = ["--task", "classify", "--input", str(wav)]
    else:
        from benchmarks.fewshot import main

        args = ["--task", "classify", "--data", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "make models" in err[0], err
