"""benchmarks.codec_peers / heldout: alignment, real Codec2 and Opus round trips, bitrate, the CLI."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fixtures_tasks import blas_one_thread, matched_bundle, task_llm  # noqa: F401

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH = DATA / "speech16k" / "arctic_a0010.wav"
pytestmark = pytest.mark.skipif(not SPEECH.is_file(), reason=f"shared data missing: {SPEECH}")
needs_codec2 = pytest.mark.skipif(not shutil.which("c2enc"), reason="codec2 not installed (apt-get install codec2)")
needs_opus = pytest.mark.skipif(not shutil.which("opusenc"), reason="opus-tools not installed")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from runtime.audio import read_audio

    return read_audio(SPEECH)[: 16000 * 3]


def _delay(x: np.ndarray, d: int) -> np.ndarray:
    return np.concatenate([np.zeros(d, np.float32), x]) if d >= 0 else x[-d:]


@pytest.mark.parametrize("d", [0, 1, 123, -77, 1000])
def test_align_recovers_a_known_delay(speech, d):
    from benchmarks.heldout import align

    ref, est, lag = align(speech, _delay(speech, d))
    assert lag == d
    assert len(ref) == len(est) and np.allclose(ref, est)


@needs_codec2
def test_align_tracks_codec2_delay_without_waveform_phase(speech):
    from benchmarks.codec_peers import codec2_peer
    from benchmarks.heldout import align

    out = codec2_peer("1200").roundtrip(speech)
    base = align(speech, out)[2]
    assert abs(align(speech, _delay(out, 300))[2] - (base + 300)) <= 2
    assert 0 <= base <= 800  # Codec2 adds tens of ms, never a lead


@needs_codec2
def test_codec2_round_trip_scores_above_a_broken_codec(speech):
    from benchmarks.codec_peers import codec2_peer, score

    out = codec2_peer("1200").roundtrip(speech)
    good = score(speech, out, speech=True)
    broken = score(speech, out[::-1].copy(), speech=True)  # same spectrum, wrong time order
    assert good["stoi"] > 0.6 and good["pesq_wb"] > 1.2, good
    assert broken["stoi"] < 0.3 and broken["stoi"] < good["stoi"] - 0.3, broken
    assert good["mel_distance"] < broken["mel_distance"]


@needs_opus
def test_opus_ranks_above_codec2_700c(speech):
    from benchmarks.codec_peers import codec2_peer, opus_peer, score

    opus = score(speech, opus_peer(8).roundtrip(speech), speech=True)
    assert opus["pesq_wb"] > 2.0 and opus["stoi"] > 0.85, opus
    if shutil.which("c2enc"):
        c2 = score(speech, codec2_peer("700C").roundtrip(speech), speech=True)
        assert opus["pesq_wb"] > c2["pesq_wb"]


def test_llm_codec_bitrate_from_manifest():
    from benchmarks.codec_peers import llm_codec_kbps

    m = {"codec": {"frame_rate": 100 / 3, "vq_strides": [4, 2, 1], "codebook_sizes": [3000, 32000, 32000]}}
    kbps = llm_codec_kbps(SimpleNamespace(bundle=SimpleNamespace(manifest=m)))
    expect = (100 / 12 * math.log2(3000) + 100 / 6 * math.log2(32000) + 100 / 3 * math.log2(32000)) / 1e3
    assert kbps == pytest.approx(expect) and 0.8 < kbps < 0.9


def test_missing_peer_is_reported_not_skipped(monkeypatch):
    import benchmarks.codec_peers as cp

    monkeypatch.setattr(cp.shutil, "which", lambda name: None)
    peers, missing = cp.build_peers(None)
    assert peers == []
    assert set(missing) == {"Codec2 700C", "Codec2 1200", "Codec2 3200", "Opus 6 kbps", "Opus 8 kbps"}
    assert "- Opus 6 kbps: not run: opusenc/opusdec not found" in cp.markdown([], missing)


def test_heldout_set_follows_the_split_rule():
    from benchmarks.heldout import heldout_set
    from codec.splits import heldout_librispeech_speakers, librispeech_speaker, split

    files = heldout_set(DATA, per_source=50, sounds=5)
    train, _ = split(DATA)
    train_files = {p for v in train.values() for p in v}
    assert files["speech"] and not set(files["speech"]) & train_files
    held = heldout_librispeech_speakers(sorted((DATA / "librispeech_train").glob("*.flac")))
    ls = [p for p in files["speech"] if "librispeech_train" in p.parts]
    assert ls and all(librispeech_speaker(p) in held for p in ls)
    assert len(files["sounds"]) == 5 and all("esc50" in p.parts for p in files["sounds"])
    assert heldout_set(DATA, 1, 1)["speech"][0] == files["speech"][0]  # quick = prefix of the same order


def test_cli_scores_a_bundle_beside_its_peers(tmp_path, monkeypatch, matched_bundle, capsys):  # noqa: F811
    import benchmarks.codec_peers as cp

    monkeypatch.setattr(cp, "heldout_set", lambda data, n, s: {"speech": [SPEECH], "sounds": []})
    assert cp.main(["--codec", str(matched_bundle), "--out", str(tmp_path), "--quick"]) == 0
    lines = [json.loads(l) for l in (tmp_path / "codec_peers.jsonl").read_text().splitlines()]
    rows = [r for r in lines if "lag_ms" in r]
    assert {r["codec"] for r in rows} >= {"LLM-Codec"}
    if shutil.which("c2enc"):
        by = {r["codec"]: r for r in rows}
        assert by["Codec2 1200"]["stoi"] > by["LLM-Codec"]["stoi"]  # an untrained tiny codec loses
    md = (tmp_path / "codec_peers.md").read_text()
    assert "| LLM-Codec |" in md and "PESQ-wb" in md
    assert cp.main(["--codec", str(matched_bundle), "--out", str(tmp_path), "--quick"]) == 1  # no --force


def test_cli_scores_several_bundles_in_one_run(tmp_path, monkeypatch, matched_bundle):  # noqa: F811
    """Training runs compared against the same peers in one command: one named row per bundle."""
    import benchmarks.codec_peers as cp

    monkeypatch.setattr(cp, "heldout_set", lambda data, n, s: {"speech": [SPEECH], "sounds": []})
    twin = tmp_path / "twin"
    shutil.copytree(matched_bundle, twin)
    assert cp.main(["--codec", str(matched_bundle), str(twin), "--out", str(tmp_path / "out"), "--quick",
                    "--spectrograms", "1"]) == 0
    assert (tmp_path / "out" / "codec_peers_spectrograms.png").stat().st_size > 10_000
    lines = [json.loads(l) for l in (tmp_path / "out" / "codec_peers.jsonl").read_text().splitlines()]
    rows = {r["codec"]: r for r in lines if "lag_ms" in r}
    a, b = rows[f"LLM-Codec {matched_bundle.name}"], rows["LLM-Codec twin"]
    assert a["stoi"] == pytest.approx(b["stoi"]) and a["pesq_wb"] == pytest.approx(b["pesq_wb"])
    assert lines[-1]["codec_bundle"] == [str(matched_bundle), str(twin)]
