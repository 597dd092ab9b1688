"""``runtime.stream`` for the few-shot tasks: real llama.cpp (tiny LLaMA, LLaMA-2 vocabulary), the
matched onnxruntime bundle and demonstration sets built from ../shared/data. Greedy streaming gives
exactly what ``runtime.tasks`` (``runtime.run``) gives on the same chunks."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fixtures_llm import DATA
from fixtures_tasks import blas_one_thread, demo_root, engine, matched_bundle, task_llm  # noqa: F401

pytestmark = pytest.mark.usefixtures("blas_one_thread")
REPO = Path(__file__).resolve().parents[1]
NOISY = DATA / "voicebank_demand" / "noisy" / "p257_094.wav"
ESC = DATA / "esc50" / "audio" / "4-182395-A-0.wav"
LSB = 2.0 / 32768


def _opts(**kw):
    from runtime.tasks import TaskOptions

    return TaskOptions(**kw)


def _set(demo_root, name):
    from runtime.tasks import load_demo_set

    return load_demo_set(demo_root / "sets" / name, name.split("-")[0])


def _cli(task, task_llm, matched_bundle, demo_root, demos, *args) -> list[str]:
    return ["--task", task, "--model", str(task_llm), "--codec", str(matched_bundle),
            "--demos", str(demo_root / "sets" / demos), "--shots", "1", "--threads", "1", *args]


def _stream_file(processor, path: Path) -> np.ndarray:
    """Run ``processor`` over ``path`` with the --fast pipeline; the concatenated output."""
    from runtime.audio_io import FileReader
    from runtime.stream_pipeline import Pipeline, run_fast
    from runtime.stream_stats import StreamStats

    class Collect:
        parts: list = []

        def write(self, pcm):
            self.parts.append(pcm)
            return 0.0

    sink, reader = Collect(), FileReader(path)
    sink.parts = []
    run_fast(reader, Pipeline(processor, sink, StreamStats(), reader.rate, realtime=False), threading.Event())
    return np.concatenate(sink.parts) if sink.parts else np.zeros(0, np.float32)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warmed-prefix"])
def test_streamed_denoise_equals_the_offline_task(engine, demo_root, warm):
    from runtime.stream_tasks import DenoiseProcessor, denoise_demos
    from runtime.tasks.denoise import denoise

    demo_set = _set(demo_root, "denoise-voicebank")
    opts = _opts(shots=1).with_defaults("denoise", demo_set.info)
    ref = denoise(engine, demo_set, NOISY, _opts(shots=1))
    proc = DenoiseProcessor(engine, denoise_demos(engine, demo_set, opts), opts)
    if warm:  # live streams cache the demonstrations first: the prefix, not one token more
        engine.lm.reset()
        k = proc.warm_up()
        assert 100 < k < ref.prompt_tokens and engine.lm._cached == engine.lm._prefix
    got = _stream_file(proc, NOISY)
    assert len(got) == len(ref.pcm) and len(proc.tokens) == ref.chunks
    np.testing.assert_array_equal(got, ref.pcm)


def test_denoise_cli_fast_writes_the_whole_file_and_llm_stages(task_llm, matched_bundle, demo_root, tmp_path, capsys):
    from runtime.stream import main

    out, stats = tmp_path / "clean.wav", tmp_path / "stats.json"
    rc = main(_cli("denoise", task_llm, matched_bundle, demo_root, "denoise-voicebank", "--input", str(NOISY),
                   "--output", str(out), "--fast", "--stats-json", str(stats), "--parallel", "1"))
    assert rc == 0, capsys.readouterr().err
    assert sf.info(str(out)).frames == sf.info(str(NOISY)).frames
    d = json.loads(stats.read_text())
    chunks = -(-sf.info(str(NOISY)).frames // 15360)
    for stage in ("encode", "search", "llm_prefill", "llm_generate", "decode", "playback"):
        assert d["stages"][stage]["n"] == chunks, stage
    assert d["llm"]["generated_tokens"] == 56 * chunks and d["llm"]["tokens_per_s"] > 0
    assert "llm_generate" in capsys.readouterr().err
    # the default: --fast reads whole batches, whole chunks are decoded side by side (one
    # llm_generate for them, the prefill inside it), the same audio on the tiny f32 LLM
    side = tmp_path / "side.wav"
    rc = main(_cli("denoise", task_llm, matched_bundle, demo_root, "denoise-voicebank", "--input", str(NOISY),
                   "--output", str(side), "--fast", "--stats-json", str(stats), "--force"))
    assert rc == 0, capsys.readouterr().err
    d = json.loads(stats.read_text())
    whole = sf.info(str(NOISY)).frames // 15360
    assert whole >= 2 and d["stages"]["llm_generate"]["n"] == chunks - whole + 1
    assert d["stages"]["decode"]["n"] == chunks and d["llm"]["generated_tokens"] == 56 * chunks
    np.testing.assert_array_equal(sf.read(str(side))[0], sf.read(str(out))[0])


@pytest.mark.parametrize("as_json", [True, False], ids=["json-fast", "text-paced"])
def test_classify_prints_one_line_per_window(engine, task_llm, matched_bundle, demo_root, capsys, as_json):
    from runtime.audio import read_audio
    from runtime.stream import main
    from runtime.stream_tasks import classify_demos
    from runtime.tasks.classify import classify_tokens
    from runtime.tasks.common import fix_length

    rc = main(_cli("classify", task_llm, matched_bundle, demo_root, "classify-esc50", "--input", str(ESC),
                   "--window-ms", "1000", "--hop-ms", "1000", "--quiet",
                   *(["--json", "--fast"] if as_json else ["--max-lag-ms", "5000"])))
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pcm = read_audio(ESC, 16000)
    assert len(lines) == (len(pcm) - 16000) // 16000 + 1 == 5
    labels = _set(demo_root, "classify-esc50").labels
    if not as_json:
        assert all(ln.split()[2] in labels for ln in lines)
        return
    rows = [json.loads(ln) for ln in lines]
    assert [r["start_s"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(r["label"] in labels and set(r["logprobs"]) == set(labels) for r in rows)
    # window 2 is what runtime.run classifies for that second of audio (same demos, same prompt)
    demo_set = _set(demo_root, "classify-esc50")
    opts = _opts(shots=1, clip_seconds=1.0).with_defaults("classify", demo_set.info)
    ref = classify_tokens(engine, classify_demos(engine, demo_set, opts),
                          engine.clip_tokens(fix_length(pcm[16000:32000], 16000)), opts)
    assert rows[1]["label"] == ref.label
    for lab, lp in ref.logprobs.items():
        assert rows[1]["logprobs"][lab] == pytest.approx(lp, abs=2e-3)


def test_text_to_audio_equals_the_offline_task(engine, demo_root):
    from runtime.stream_stats import StreamStats
    from runtime.stream_tasks import TextToAudio
    from runtime.tasks.text2sound import text2sound
    from runtime.tasks.tts import tts

    for task, text, fn in (("tts", "an audio of (1+1)", tts), ("text2sound", "dog", text2sound)):
        demo_set = _set(demo_root, f"{task}-{'fsdd' if task == 'tts' else 'esc50'}")
        opts = _opts(shots=2).with_defaults(task, demo_set.info)
        got = TextToAudio(engine, demo_set, opts, task).speak(text, StreamStats())
        np.testing.assert_array_equal(got, fn(engine, demo_set, text, _opts(shots=2)).pcm)


def test_tts_reads_prompts_from_stdin_lines(task_llm, matched_bundle, demo_root, tmp_path):
    out = tmp_path / "spoken.wav"
    cmd = [sys.executable, "-m", "runtime.stream",
           *_cli("tts", task_llm, matched_bundle, demo_root, "tts-fsdd", "--output", str(out))]
    r = subprocess.run(cmd, cwd=REPO, input="an audio of 1\n\nan audio of 2\n", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    clip = int(round(_set(demo_root, "tts-fsdd").info.get("clip_seconds", 0.72) * 16000))
    x, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and len(x) == 2 * clip and np.isfinite(x).all()
    assert "'an audio of 1'" in r.stderr and "'an audio of 2'" in r.stderr


def test_text2sound_reads_text_flags(task_llm, matched_bundle, demo_root, tmp_path, capsys):
    from runtime.stream import main

    out = tmp_path / "sounds.wav"
    rc = main(_cli("text2sound", task_llm, matched_bundle, demo_root, "text2sound-esc50", "--text", "dog",
                   "--text", "rooster", "--output", str(out), "--quiet"))
    assert rc == 0, capsys.readouterr().err
    clip = int(round(_set(demo_root, "text2sound-esc50").info.get("clip_seconds", 1.0) * 16000))
    assert sf.info(str(out)).frames == 2 * clip
