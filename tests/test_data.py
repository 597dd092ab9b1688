"""codec.data / codec.semantic on the shared recordings and on files written here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.data import (AudioDataset, AudioError, ShardedEpochSampler, collate, find_audio_files, load_audio,
                        make_loader, normalize_loudness)
from codec.semantic import clip_text

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
SR = 16000

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared data missing: {DATA}")


def _tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_fsdd_is_resampled_to_16k():
    path = FSDD / "3_george_0.wav"
    info = sf.info(str(path))
    assert info.samplerate == 8000
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 2 * info.frames) <= 2
    # FSDD has no energy above 4 kHz; the upsampled file must not invent any (soxr anti-imaging)
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    assert spec[freqs > 4300].sum() < 0.01 * spec.sum()


@pytest.mark.parametrize("fmt,ext,sr,channels", [
    pytest.param("WAV", ".wav", 44100, 2, id="wav-44k-stereo"),
    pytest.param("FLAC", ".flac", 48000, 1, id="flac-48k-mono"),
    pytest.param("OGG", ".ogg", 22050, 2, id="ogg-22k-stereo"),
])
def test_any_rate_and_channels(tmp_path, fmt, ext, sr, channels):
    tone = _tone(1.0, sr, amp=0.4)
    data = np.stack([tone, np.zeros_like(tone)], axis=1) if channels == 2 else tone
    path = tmp_path / f"clip{ext}"
    sf.write(str(path), data, sr, format=fmt)
    x = load_audio(path)
    assert abs(len(x) - SR) <= 2
    expected_rms = 0.4 / np.sqrt(2) / channels  # a stereo file with a silent channel mixes to half
    mid = x[2000:-2000]
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(expected_rms, rel=0.05)
    peak_freq = np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(np.abs(np.fft.rfft(x)))]
    assert peak_freq == pytest.approx(440, abs=2)


def test_loudness_normalisation():
    x = _tone(1.0, SR, amp=0.01)
    y = normalize_loudness(x, target_rms_db=-20.0)
    assert 20 * np.log10(np.sqrt(np.mean(y ** 2))) == pytest.approx(-20.0, abs=0.05)
    loud = np.zeros(SR, np.float32)
    loud[100] = 1.0  # a click: RMS target would push the peak far past 0.95
    assert np.abs(normalize_loudness(loud)).max() == pytest.approx(0.95, rel=1e-4)
    quiet = _tone(1.0, SR, amp=1e-6)  # gain is capped at +30 dB
    assert np.abs(normalize_loudness(quiet)).max() == pytest.approx(1e-6 * 10 ** 1.5, rel=1e-3)


def test_bad_files_are_skipped_with_their_names(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(str(good), _tone(0.5, 16000), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage that is no wave file" * 4)
    short = tmp_path / "short.flac"
    sf.write(str(short), _tone(0.05, 16000), 16000, format="FLAC")
    with pytest.warns(UserWarning) as rec:
        ds = AudioDataset([tmp_path], segment=4000)
    msg = " ".join(str(w.message) for w in rec)
    assert "skipped 3" in msg
    for name in ("empty.wav", "corrupt.wav", "short.flac"):
        assert name in msg
    assert "good.wav" not in msg and [c.path.name for c in ds.clips] == ["good.wav"]
    with pytest.raises(AudioError, match="empty|no samples"):
        load_audio(empty)
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(corrupt)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    corrupt.rename(only_bad / "corrupt.wav")
    with pytest.warns(UserWarning), pytest.raises(AudioError, match="no usable audio"):
        AudioDataset([only_bad], segment=4000)
    with pytest.raises(FileNotFoundError, match="not found"):
        AudioDataset([tmp_path / "nope"], segment=4000)


def test_list_file_crops_and_texts(tmp_path):
    names = ["0_jackson_0.wav", "7_george_3.wav", "9_lucas_10.wav"]
    lst = tmp_path / "train.lst"
    lst.write_text("# FSDD subset\n" + "\n".join(str(FSDD / n) for n in names) + "\n")
    assert [p.name for p, _ in find_audio_files([lst])] == names
    ds = AudioDataset([lst], segment=24000, seed=3)
    assert [c.text for c in ds.clips] == ["zero", "seven", "nine"]
    wav, text = ds[1]
    assert wav.shape == (1, 24000) and wav.dtype == torch.float32 and text == "seven"
    n = len(load_audio(FSDD / names[1]))
    assert n < 24000 and torch.all(wav[0, n:] == 0) and wav[0, :n].abs().max() > 0.1  # padded at the end
    long_ds = AudioDataset([lst], segment=2000, seed=3)
    a, b = long_ds[0][0], long_ds[0][0]
    assert torch.equal(a, b)  # deterministic
    crops = {tuple(AudioDataset([lst], segment=2000, seed=s)[0][0][0, :50].tolist()) for s in range(4)}
    assert len(crops) > 1  # the seed moves the crop
    long_ds.set_epoch(1)
    assert not torch.equal(long_ds[0][0], a)  # a new epoch draws new crops


def test_dataset_texts():
    cases = {
        DATA / "esc50" / "audio" / "4-182395-A-0.wav": "dog",
        DATA / "ravdess" / "audio" / "03-01-01-01-01-01-01.wav": "Kids are talking by the door",
        DATA / "librispeech" / "198-209-0000.hq.ogg": None,  # its .txt is an attribution, not a transcript
        DATA / "speech16k" / "arctic_a0010.wav": None,
        FSDD / "5_nicolas_2.wav": "five",
    }
    for path, text in cases.items():
        if path.exists():
            assert clip_text(path) == text, path
    sea = [p for p in (DATA / "esc50" / "audio").glob("*.wav") if clip_text(p) == "sea waves"]
    assert len(sea) == 8


def test_librispeech_transcripts(tmp_path):
    chapter = tmp_path / "198" / "209"
    chapter.mkdir(parents=True)
    sf.write(str(chapter / "198-209-0001.flac"), _tone(0.5, 16000), 16000, format="FLAC")
    (chapter / "198-209.trans.txt").write_text("198-209-0000 FIRST LINE\n198-209-0001 HE HOPED THERE WOULD BE STEW\n")
    assert clip_text(chapter / "198-209-0001.flac") == "he hoped there would be stew"


def test_sampler_shards_and_balances():
    sources = [0] * 90 + [1] * 10
    a = list(ShardedEpochSampler(sources, seed=1, rank=0, world_size=2))
    b = list(ShardedEpochSampler(sources, seed=1, rank=1, world_size=2))
    assert len(a) == len(b) == 50 and not {i % 100 for i in a} & {i % 100 for i in b}
    s = ShardedEpochSampler(sources, seed=1)
    s.set_epoch(0, start=30)
    assert list(s) == list(ShardedEpochSampler(sources, seed=1))[30:]
    bal = ShardedEpochSampler(sources, seed=2, balanced=True, min_per_rank=2000)
    share = np.mean([sources[i % 100] for i in bal])
    assert 0.45 < share < 0.55  # the 10-clip source is drawn as often as the 90-clip one
    assert len(set(iter(bal))) == 2000  # repeats get distinct crop keys


def test_loader_batches(tmp_path):
    ds = AudioDataset([FSDD / "1_jackson_0.wav", FSDD / "2_jackson_0.wav", FSDD / "4_jackson_0.wav"], segment=8000)
    loader = make_loader(ds, 2, ShardedEpochSampler([c.source for c in ds.clips], seed=0, min_per_rank=4))
    batches = list(loader)
    assert len(batches) == 2
    wav, texts = batches[0]
    assert wav.shape == (2, 1, 8000) and all(t in ("one", "two", "four") for t in texts)
    assert collate([(torch.zeros(1, 5), None)])[1] == [None]
