"""scripts.make_demos: demonstration sets and labelled views built from the real ../shared/data."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from fixtures_llm import DATA
from fixtures_tasks import demo_root  # noqa: F401

EXPECTED = {  # set -> (task, clips, samples per clip at 16 kHz)
    "classify-esc50": ("classify", 10 * 2, 16000),
    "classify-ravdess": ("classify", 8 * 2, 16000),
    "tts-fsdd": ("tts", 4, 11520),
    "denoise-voicebank": ("denoise", 2, 8 * 1920),
    "text2sound-esc50": ("text2sound", 10, 16000),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sets_load_and_clips_have_the_fixed_length(demo_root, name):
    from runtime.tasks import load_demo_set

    task, rows, samples = EXPECTED[name]
    ds = load_demo_set(demo_root / "sets" / name, task)
    assert len(ds.rows) == rows and ds.info["task"] == task
    for r in ds.rows:
        for p in (r.input, r.output):
            if p is not None:
                info = sf.info(str(p))
                assert (info.samplerate, info.channels, info.frames) == (16000, 1, samples), p
    if task == "tts":
        assert [r.text for r in ds.rows] == [f"an audio of {d}" for d in range(4)]
    if task == "classify":
        assert ds.select_per_label(1)[:len(ds.labels)] == [ds.by_label()[lab][0] for lab in ds.labels]


def test_denoise_pairs_are_aligned_windows_of_the_same_recording(demo_root):
    """Noisy = clean + noise in VoiceBank-DEMAND, so the cut pair must still correlate strongly."""
    from runtime.tasks import load_demo_set

    for r in load_demo_set(demo_root / "sets" / "denoise-voicebank", "denoise").rows:
        x, _ = sf.read(str(r.input))
        y, _ = sf.read(str(r.output))
        assert np.corrcoef(x, y)[0, 1] > 0.5
        assert np.abs(y).max() > 0.05  # the loudest window, not leading silence


def test_labelled_views(demo_root):
    lab = demo_root / "labelled"
    esc = sorted(p.name for p in (lab / "esc50").iterdir())
    assert len(esc) == 10 and "dog" in esc
    for d in (lab / "esc50").iterdir():
        files = list(d.glob("*.wav"))
        assert len(files) == 8 and all(f.is_symlink() and f.resolve().is_file() for f in files)
    assert len(list((lab / "ravdess").iterdir())) == 8
    assert sorted(p.name for p in (lab / "fsdd").iterdir()) == [str(d) for d in range(10)]
    clean = {p.name for p in (lab / "voicebank" / "clean").iterdir()}
    noisy = {p.name for p in (lab / "voicebank" / "noisy").iterdir()}
    demo_sources = {p.name.removeprefix("clean_") for p in (demo_root / "sets" / "denoise-voicebank" / "clips").glob("clean_*")}
    assert clean == noisy and len(clean) == 23 - 2
    assert not clean & demo_sources  # held-out pairs only


def test_crop_loudest_finds_the_burst():
    from runtime.tasks.common import crop_start, fix_length

    x = np.zeros(5 * 16000, np.float32)
    x[40000:44000] = 0.5
    s = crop_start(len(x), 16000, "loudest", x)
    assert s <= 40000 and s + 16000 >= 44000
    assert np.abs(fix_length(x, 16000, "loudest")).sum() == pytest.approx(4000 * 0.5)
    assert not fix_length(x, 16000, "start").any()
    assert fix_length(x[:100], 300).shape == (300,)


def test_refuses_overwrite_and_bad_data(demo_root, tmp_path, capsys):
    from scripts.make_demos import main

    out = demo_root / "sets"
    assert main(["--data", str(DATA), "--out", str(out), "--sets", "tts-fsdd"]) == 1
    assert "exists (pass --force" in capsys.readouterr().err
    (tmp_path / "tts-fsdd").mkdir()
    (tmp_path / "tts-fsdd" / "keep.txt").write_text("mine")
    assert main(["--data", str(DATA), "--out", str(tmp_path), "--sets", "tts-fsdd", "--force"]) == 1
    assert "not a demonstration set" in capsys.readouterr().err
    assert (tmp_path / "tts-fsdd" / "keep.txt").exists()
    assert main(["--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "is missing" in err and len(err.strip().splitlines()) == 1


def test_force_rebuild_with_other_duration(tmp_path):
    from scripts.make_demos import main
    from runtime.tasks import load_demo_set

    args = ["--data", str(DATA), "--out", str(tmp_path), "--sets", "tts-fsdd", "--tts-per-digit", "1"]
    assert main(args) == 0
    assert main(args + ["--force", "--tts-seconds", "0.48", "--crop", "start"]) == 0
    ds = load_demo_set(tmp_path / "tts-fsdd", "tts")
    assert ds.info["clip_seconds"] == 0.48
    assert all(sf.info(str(r.output)).frames == 7680 for r in ds.rows)
