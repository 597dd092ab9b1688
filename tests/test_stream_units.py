"""runtime.stream building blocks without models: ring buffer, lag policy, live loop, statistics,
streaming resampler, file reader, defaults, and the device errors of a machine without a sound card."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from fixtures_llm import DATA
from runtime.audio_io import FileReader, StreamResampler
from runtime.ring import RingBuffer
from runtime.stream_pipeline import Pipeline, limit_lag, run_live
from runtime.stream_stats import STAGES, StreamStats

SPEECH = DATA / "speech16k" / "arctic_a0010.wav"


def test_ring_wraps_and_keeps_the_newest_on_overrun():
    r = RingBuffer(5)
    assert r.write(np.arange(3)) == 0 and len(r) == 3
    np.testing.assert_array_equal(r.read(2), [0, 1])
    assert r.write(np.arange(10, 14)) == 0  # wraps around the end
    np.testing.assert_array_equal(r.read(), [2, 10, 11, 12, 13])
    assert r.write(np.arange(20, 27)) == 2 and r.overruns == 1 and r.overrun_samples == 2
    out = np.full(8, -1.0, dtype=np.float32)
    assert r.read_into(out) == 5  # a short read: the caller fills the rest with silence
    np.testing.assert_array_equal(out[:5], [22, 23, 24, 25, 26])
    assert r.write(np.arange(3)) == 0 and r.discard(2) == 2 and r.read().tolist() == [2]


def test_ring_is_consistent_between_two_threads():
    r, got = RingBuffer(64), []
    data = np.arange(20000, dtype=np.float32)

    def produce():
        for i in range(0, len(data), 37):
            while len(r) > 64 - 37:
                time.sleep(0)
            r.write(data[i:i + 37])

    t = threading.Thread(target=produce)
    t.start()
    while sum(map(len, got)) < len(data):
        got.append(r.read())
    t.join()
    np.testing.assert_array_equal(np.concatenate(got), data)


@pytest.mark.parametrize("n, expect_kept, expect_dropped", [
    pytest.param(900, 900, 0, id="under-the-lag"),
    pytest.param(1001, 901, 1, id="just-over: drop one whole chunk"),
    pytest.param(5000, 1000, 40, id="far-behind"),
])
def test_limit_lag_drops_oldest_whole_chunks(n, expect_kept, expect_dropped):
    pcm = np.arange(n, dtype=np.float32)
    kept, dropped = limit_lag(pcm, chunk_native=100, max_lag=1000)
    assert (len(kept), dropped) == (expect_kept, expect_dropped)
    np.testing.assert_array_equal(kept, pcm[len(pcm) - len(kept):])  # the newest samples survive


class _Echo:
    """A processor that returns its chunk (optionally slowly) and records what it saw."""

    def __init__(self, chunk: int, delay: float = 0.0) -> None:
        self.chunk, self.delay, self.seen = chunk, delay, []

    def process(self, pcm, stats):
        time.sleep(self.delay)
        self.seen.append(pcm.copy())
        return pcm

    def flush(self, tail, stats):
        return tail


class _ListSink:
    def __init__(self) -> None:
        self.parts = []

    def write(self, pcm) -> float:
        self.parts.append(np.asarray(pcm).copy())
        return time.perf_counter()


class _FakeLive:
    """A real-time source: ``blocks`` arrive one per read; then it ends with ``end_reason``."""

    def __init__(self, blocks, end_reason: str, rate: int = 16000) -> None:
        self.blocks, self.end_reason, self.rate, self.overruns = list(blocks), end_reason, rate, 0

    def read(self, timeout=0.25):
        return (self.blocks.pop(0) if self.blocks else np.zeros(0, np.float32)), time.perf_counter()

    @property
    def finished(self) -> bool:
        return not self.blocks

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("end", ["eof", "device lost"])
def test_live_loop_drains_and_finishes_however_the_source_ends(end):
    x = np.random.default_rng(0).standard_normal(16000 + 123).astype(np.float32)
    stats, sink = StreamStats(), _ListSink()
    pipe = Pipeline(_Echo(1920), sink, stats, 16000, realtime=True)
    reason = run_live(_FakeLive(np.array_split(x, 7), end), pipe, threading.Event(), max_lag_s=5.0)
    assert reason == end
    np.testing.assert_array_equal(np.concatenate(sink.parts), x)  # every sample, the tail included
    assert stats.stages["capture"] and len(stats.end_to_end) == -(-len(x) // 1920)


def test_live_loop_drops_whole_chunks_and_keeps_time_alignment():
    """A block bigger than the allowed lag: the oldest whole chunks become silence, nothing drifts."""
    x = np.ones(16000 * 3, dtype=np.float32)
    stats, sink = StreamStats(), _ListSink()
    pipe = Pipeline(_Echo(1920), sink, stats, 16000, realtime=True)
    run_live(_FakeLive([x], "eof"), pipe, threading.Event(), max_lag_s=1.0)
    out = np.concatenate(sink.parts)
    assert len(out) == len(x) and stats.dropped_chunks == 17
    assert not out[:17 * 1920].any() and out[17 * 1920:].all()


class _BatchEcho(_Echo):
    """An echo that also takes several waiting chunks at once (like the denoise processor)."""

    def __init__(self, chunk: int, parallel: int) -> None:
        super().__init__(chunk)
        self.parallel, self.calls = parallel, []

    def process_many(self, chunks, stats):
        self.calls.append(len(chunks))
        return [c * 2 for c in chunks]

    def process(self, pcm, stats):
        self.calls.append(1)
        return pcm * 2


def test_waiting_chunks_go_to_process_many_in_order_with_one_latency_each():
    x = np.random.default_rng(1).standard_normal(1920 * 7 + 50).astype(np.float32)
    stats, sink = StreamStats(), _ListSink()
    proc = _BatchEcho(1920, parallel=3)
    pipe = Pipeline(proc, sink, stats, 16000, realtime=True)
    run_live(_FakeLive([x], "eof"), pipe, threading.Event(), max_lag_s=5.0)
    assert proc.calls == [3, 3, 1]  # 7 whole chunks waiting; the 50-sample tail is flushed (echo)
    out = np.concatenate(sink.parts)
    np.testing.assert_array_equal(out[:7 * 1920], 2 * x[:7 * 1920])
    assert len(stats.end_to_end) == 8 and len(stats.chunk_ms) == 8 and len(stats.stages["capture"]) == 8


def test_gather_waits_for_whole_batches_and_flushes_the_rest_at_the_end():
    x = np.random.default_rng(2).standard_normal(1920 * 5 + 70).astype(np.float32)
    stats, sink = StreamStats(), _ListSink()
    proc = _BatchEcho(1920, parallel=1)
    pipe = Pipeline(proc, sink, stats, 16000, realtime=True, gather=2)
    blocks = np.array_split(x, 11)  # chunks arrive one by one: nothing runs before two are waiting
    run_live(_FakeLive(blocks, "eof"), pipe, threading.Event(), max_lag_s=5.0)
    assert proc.calls == [2, 2, 1]  # the fifth whole chunk alone at the end, then the tail
    np.testing.assert_array_equal(np.concatenate(sink.parts)[:5 * 1920], 2 * x[:5 * 1920])
    assert len(stats.end_to_end) == 6
    with pytest.raises(ValueError, match="gather"):
        Pipeline(_Echo(1920), sink, stats, 16000, realtime=True, gather=2)  # no process_many


def test_stop_event_ends_the_live_loop():
    stop = threading.Event()
    stop.set()
    stats, sink = StreamStats(), _ListSink()
    pipe = Pipeline(_Echo(1920), sink, stats, 16000, realtime=True)
    assert run_live(_FakeLive([np.ones(5000, np.float32)] * 3, "eof"), pipe, stop, 5.0) == "stopped"


def test_stats_table_and_json(tmp_path):
    s = StreamStats()
    for v in (0.010, 0.020, 0.030):
        s.add("encode", v)
    s.end_to_end += [130.0, 140.0]
    s.audio_in_samples = 32000
    path = tmp_path / "stats.json"
    s.write_json(path, {"task": "codec"})
    d = json.loads(path.read_text())
    assert d["task"] == "codec" and set(d["stages"]) == set(STAGES)
    assert d["stages"]["encode"] == {"n": 3, "p50_ms": 20.0, "p95_ms": 29.0, "max_ms": 30.0}
    assert d["stages"]["decode"]["n"] == 0 and d["end_to_end"]["max_ms"] == 140.0
    assert "encode" in s.table() and "end to end" in s.table() and "RTF" in s.status_line()


@pytest.mark.parametrize("src", [44100, 48000, 8000, 16000])
def test_streaming_resampler_equals_offline(src):
    import soxr

    x = np.random.default_rng(1).standard_normal(src).astype(np.float32)
    rs = StreamResampler(src, 16000)
    parts = [rs(x[i:i + 777]) for i in range(0, len(x), 777)] + [rs(np.zeros(0, np.float32), last=True)]
    ref = x if src == 16000 else soxr.resample(x, src, 16000, quality="HQ")
    np.testing.assert_array_equal(np.concatenate(parts), ref)


def test_file_reader_mixes_any_rate_and_channels_and_zeroes_nan(tmp_path):
    x, _ = sf.read(str(SPEECH), dtype="float32")
    path = tmp_path / "st.wav"
    stereo = np.stack([x, 0.5 * x], axis=1)
    stereo[100, 0] = np.nan
    sf.write(str(path), stereo, 44100, subtype="FLOAT")
    r = FileReader(path)
    assert (r.rate, r.channels, r.frames) == (44100, 2, len(x))
    got = np.concatenate([r.read(1000) for _ in range(-(-len(x) // 1000))])
    assert r.read(10).size == 0 and r.nonfinite == 1 and got[100] == 0
    np.testing.assert_allclose(got[101:], 0.75 * x[101:], atol=1e-6)


def test_default_paths_point_into_models_default():
    from runtime.defaults import DEFAULT_ROOT, default_paths

    model, codec, demos = default_paths("denoise")
    assert DEFAULT_ROOT.name == "default" and DEFAULT_ROOT.parent.name == "models"
    assert (model, codec) == (DEFAULT_ROOT / "llm.gguf", DEFAULT_ROOT / "codec")
    assert demos == DEFAULT_ROOT / "demos" / "denoise"
