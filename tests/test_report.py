"""benchmarks.report end to end (tiny LLaMA + matched codec, tiny subsets) and its building blocks:
ASR text scoring, nearest-demonstration baselines, noise mixing, the denoising peers, the Whisper judge."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures_tasks import blas_one_thread, matched_bundle, task_llm  # noqa: F401

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH = DATA / "speech16k" / "arctic_a0010.wav"
pytestmark = [pytest.mark.skipif(not (DATA / "esc50" / "meta.csv").is_file(), reason=f"shared data missing: {DATA}"),
              pytest.mark.usefixtures("blas_one_thread")]


def test_report_writes_every_section_and_names_missing_peers(tmp_path, monkeypatch, task_llm, matched_bundle):  # noqa: F811
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    import benchmarks.asr as asr
    import benchmarks.codec_peers as cp
    from benchmarks import report

    esc = sorted((DATA / "esc50" / "audio").glob("*.wav"))[:1]
    monkeypatch.setattr(cp, "heldout_set", lambda data, n, s: {"speech": [SPEECH], "sounds": esc})
    real_which = shutil.which
    monkeypatch.setattr(cp.shutil, "which", lambda n: None if n.startswith("opus") else real_which(n))
    monkeypatch.setattr(asr, "available", lambda: "faster-whisper absent (simulated)")
    out = tmp_path / "rep"
    argv = ["--quick", "--sections", "codec", "classify", "--model", str(task_llm), "--codec", str(matched_bundle),
            "--out", str(out), "--threads", "1"]
    assert report.main(argv) == 0
    md = (out / "REPORT.md").read_text()
    for title in report.TITLES.values():
        assert f"## {title}" in md
    assert "Opus 6 kbps: not run: opusenc/opusdec not found" in md
    assert "Whisper WER: not run: faster-whisper absent (simulated)" in md
    assert md.count("not run: not selected (--sections)") == 3  # denoise, tts, speed
    assert "| LLM-Codec |" in md and "nearest demo: mean MFCC" in md and "| LLM |" in md
    if real_which("c2enc"):
        assert "| Codec2 1200 |" in md
    for png in ("codec_rate_distortion.png", "classify.png", "spectrograms.png"):
        assert (out / png).stat().st_size > 10_000
    recs = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert {r.get("section") for r in recs} >= {"codec", "classify"}
    assert "git_sha" in recs[-1]["env"]
    assert report.main(argv) == 1  # no overwrite without --force


def test_wer_and_digit_parsing():
    from benchmarks.asr import corpus_wer, spoken_digit, wer

    assert wer("The cat sat.", "the cat sat") == 0.0
    assert wer("the cat sat on the mat", "the bat sat on mat") == pytest.approx(2 / 6)
    assert corpus_wer([("a b", "a b"), ("c d e f", "c")]) == pytest.approx(3 / 6)
    assert [spoken_digit(t) for t in ("Three.", "3", "two, two", "one two", "Shaving", "")] == [3, 3, 2, None, None, None]


def test_nearest_demonstration_baselines():
    from collections import Counter

    from benchmarks.baselines import bag, cosine, mfcc_mean, nearest_label

    assert cosine(bag([[1, 2, 2], [5]]), bag([[1, 2, 2], [5]])) == pytest.approx(1.0)
    assert cosine(Counter({(0, 1): 1}), Counter({(1, 1): 1})) == 0.0  # same id on another layer differs
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 3000 * t)
    demos = [(mfcc_mean(low.astype(np.float32)), "low"), (mfcc_mean(high.astype(np.float32)), "high")]
    query = mfcc_mean((0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    assert nearest_label(query, demos, lambda a, b: -float(np.linalg.norm(a - b))) == "low"


def test_mixture_hits_the_requested_snr():
    from benchmarks.denoise_peers import mix

    rng = np.random.default_rng(0)
    clean = rng.standard_normal(16000).astype(np.float32)
    noise = rng.standard_normal(5000).astype(np.float32)
    for snr in (0.0, 5.0, 10.0):
        n = mix(clean, noise, snr, np.random.default_rng(1)) - clean
        assert 10 * np.log10(np.mean(clean ** 2) / np.mean(n ** 2)) == pytest.approx(snr, abs=1e-3)


@pytest.mark.parametrize("maker", ["deepfilternet3", "rnnoise", "webrtc_ns"])
def test_denoising_peer_improves_a_noisy_pair(maker):
    import benchmarks.denoise_peers as dp
    from runtime.audio import read_audio

    made = getattr(dp, maker)()
    if isinstance(made, str):
        pytest.skip(made)
    vb = DATA / "voicebank_demand"
    clean, noisy = read_audio(vb / "clean" / "p232_246.wav"), read_audio(vb / "noisy" / "p232_246.wav")
    out = made.run(noisy)
    before, after = dp.score(clean, noisy), dp.score(clean, out)
    assert abs(len(out) - len(noisy)) <= 480
    assert after["pesq_wb"] > before["pesq_wb"] or after["si_sdr"] > before["si_sdr"], (before, after)
    assert dp.score(clean, out[::-1].copy())["stoi"] < after["stoi"] - 0.3


def test_whisper_judge_hears_a_real_digit():
    from benchmarks.asr import available

    if (reason := available()):
        pytest.skip(reason)
    from benchmarks.asr import Judge, spoken_digit
    from benchmarks.tts_digits import judge_accuracy
    from runtime.audio import read_audio

    judge = Judge(threads=1)
    rows, acc = judge_accuracy(judge, [(read_audio(DATA / "fsdd" / "recordings" / "3_jackson_0.wav"), 3),
                                       (np.zeros(12000, np.float32), -1)])
    assert rows[0]["heard"] == 3 and rows[1]["heard"] is None
    assert spoken_digit(rows[0]["transcript"]) == 3
