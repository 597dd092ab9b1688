"""codec.train end to end on real FSDD recordings with a tiny real LLaMA GGUF, plus the loss pieces."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_llm import VOCAB_GGUF, tiny_gguf  # noqa: F401  (pytest fixture)
from safetensors.torch import load_file

from codec.checkpoint import load_checkpoint
from codec.discriminator import MultiScaleSTFTDiscriminator, discriminator_for
from codec.modules.harmonic import INIT_LOG_AMPLITUDE, INIT_LOG_F0, PARAM_GAIN
from codec.losses import (MultiResolutionMelLoss, MultiResolutionSTFTLoss, consistency_loss, discriminator_loss,
                          semantic_loss)
from codec.teacher import get_teacher
from codec.train import main, parse_overrides, segment_samples
from codec.training.state import lr_factor, read_metrics
from codec.training.objective import TextTargets
from codec.vocab import build_word_table, load_vocab

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared data missing: {FSDD}")


def _fsdd_list(path: Path, takes: range, speakers=("jackson", "george", "lucas")) -> Path:
    files = [FSDD / f"{d}_{s}_{t}.wav" for d in range(10) for s in speakers for t in takes]
    path.write_text("\n".join(str(f) for f in files) + "\n")
    return path


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("lists")
    # takes 0-4 are FSDD's test split: held out for the evaluation batch
    return _fsdd_list(d / "train.lst", range(5, 7)), _fsdd_list(d / "eval.lst", range(0, 1))


def _args(gguf: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--llm", str(gguf), "--out", str(out), "--steps", str(steps),
            "--batch-size", "4", "--segment-seconds", "0.6", "--lr", "3e-3", "--warmup", "5", "--device", "cpu",
            "--word-table-size", "500", "--log-every", "5", "--seed", "0", "--no-progress",
            # one thread: on a shared 2-core CI machine OpenMP spinning makes 2 threads ~10x slower
            "--threads", "1", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_gguf, lists) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("run") / "tiny"
    rc = main(_args(tiny_gguf, out, 40, "--data", str(lists[0]), "--eval-data", str(lists[1]), "--ckpt-every", "20"))
    assert rc == 0
    return out


def test_training_lowers_reconstruction_loss(trained):
    evals = read_metrics(trained / "eval.csv")
    assert [r["step"] for r in evals] == [0, 40]
    before, after = evals[0]["recon"], evals[-1]["recon"]
    assert after <= 0.7 * before, (before, after)  # held-out FSDD batch, same crops before and after
    rows = read_metrics(trained / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert np.mean([r["recon"] for r in rows[-2:]]) < 0.8 * np.mean([r["recon"] for r in rows[:2]])
    for key in ("stft", "mel", "commitment", "codebook", "entropy", "semantic", "consistency", "adversarial", "feature",
                "disc", "lr", "secs", "audio_s_per_s"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["semantic"] > 0  # FSDD digits carry text ("zero".."nine")


def test_output_directory_is_a_checkpoint(trained, tiny_gguf):  # noqa: F811
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "metrics.csv", "eval.csv", "train_state.pt"} <= names
    model, info = load_checkpoint(trained)
    vocab = load_vocab(tiny_gguf)
    assert model.cfg.preset == "tiny" and model.cfg.llm_dim == 64 and model.cfg.word_table_size == 500
    assert info["fingerprint"] == load_vocab(VOCAB_GGUF).fingerprint
    assert info["word_token_ids"] == build_word_table(vocab, 500).tolist()
    np.testing.assert_array_equal(model.quantizer.word_codebook.numpy(), vocab.embeddings[info["word_token_ids"]])
    assert json.loads((trained / "config.json").read_text())["vocab_size"] == 32000


def test_resume_continues(trained, tiny_gguf, tmp_path):  # noqa: F811
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    train_lst = _fsdd_list(tmp_path / "t.lst", range(5, 7))
    assert main(_args(tiny_gguf, out, 50, "--data", str(train_lst), "--resume")) == 0
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows][-3:] == [40, 45, 50]
    assert torch.load(out / "train_state.pt", weights_only=False)["step"] == 50
    before, after = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not torch.equal(before["quantizer.cb_proj.0.weight"], after["quantizer.cb_proj.0.weight"])


def test_resume_equals_uninterrupted(tiny_gguf, tmp_path):  # noqa: F811
    data = _fsdd_list(tmp_path / "d.lst", range(9, 10), speakers=("jackson",))
    common = ["--data", str(data), "--batch-size", "2", "--segment-seconds", "0.24"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(_args(tiny_gguf, straight, 6, *common)) == 0
    assert main(_args(tiny_gguf, split, 6, *common, "--stop-after", "3")) == 0
    assert torch.load(split / "train_state.pt", weights_only=False)["step"] == 3
    assert main(_args(tiny_gguf, split, 6, *common, "--resume")) == 0
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_warm_start_from_a_run_and_from_weights_only(trained, tiny_gguf, lists, tmp_path, capsys):  # noqa: F811
    """--init: a new run (fresh optimiser, its own schedule) from another run's codec + discriminator weights,
    or from a weights-only copy (codec only); a different config is a one-line error."""
    from codec.checkpoint import save_checkpoint

    warm = tmp_path / "warm"
    assert main(_args(tiny_gguf, warm, 1, "--data", str(lists[0]), "--eval-data", str(lists[1]),
                      "--init", str(trained))) == 0
    assert "codec, discriminator" in capsys.readouterr().err
    first_eval = read_metrics(warm / "eval.csv")[0]
    assert first_eval["recon"] == pytest.approx(read_metrics(trained / "eval.csv")[-1]["recon"], rel=1e-4)
    assert torch.load(warm / "train_state.pt", weights_only=False)["step"] == 1  # a new run, not a resume
    model, info = load_checkpoint(trained)
    light = tmp_path / "light"
    from runtime.bundle import sha256_file

    save_checkpoint(light, model, {**info, "gguf_sha256": sha256_file(tiny_gguf).removeprefix("sha256:")}, codebooks=False)
    warm2 = tmp_path / "warm2"
    assert main(_args(tiny_gguf, warm2, 1, "--data", str(lists[0]), "--eval-data", str(lists[1]),
                      "--init", str(light))) == 0
    assert "from " + str(light) + ": codec\n" in capsys.readouterr().err
    from codec.publish import main as publish

    published = tmp_path / "published"  # weights only + the critic's weights (train_aux.safetensors)
    assert publish([str(trained), str(published)]) == 0 and (published / "train_aux.safetensors").is_file()
    assert main(_args(tiny_gguf, tmp_path / "warm3", 1, "--data", str(lists[0]), "--init", str(published))) == 0
    assert "codec, discriminator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(tiny_gguf, tmp_path / "bad", 1, "--data", str(lists[0]), "--init", str(trained),
                   "--override", "latent_dim=32"))
    assert "config differs" in capsys.readouterr().err


def test_warm_start_with_a_new_decoder_head_frozen_encoder_and_both_discriminators(
        trained, tiny_gguf, lists, tmp_path, capsys):  # noqa: F811
    """--override decoder_head=istft over a conv run: encoder, quantizer and early decoder stages are kept
    (and with --freeze stay bit-identical, so the tokens do not change); --disc both keeps the MS-STFT critic."""
    out = tmp_path / "istft"
    assert main(_args(tiny_gguf, out, 3, "--data", str(lists[0]), "--init", str(trained), "--override",
                      "decoder_head=istft", "--freeze", "encoder", "quantizer", "--disc", "both")) == 0
    err = capsys.readouterr().err
    assert "fresh: decoder.head" in err and "its MS-STFT part" in err
    old, _ = load_checkpoint(trained)
    new, _ = load_checkpoint(out)
    assert new.cfg.decoder_head == "istft"
    for part in ("encoder", "quantizer"):
        a, b = getattr(old, part).state_dict(), getattr(new, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    b1_old, b1_new = old.decoder.block1.state_dict(), new.decoder.block1.state_dict()
    assert any(not torch.equal(b1_old[k], b1_new[k]) for k in b1_old)  # the kept stage trains on
    with pytest.raises(SystemExit):
        main(_args(tiny_gguf, tmp_path / "bad", 1, "--data", str(lists[0]), "--init", str(trained),
                   "--disc", "mpd"))
    assert "--disc both keeps" in capsys.readouterr().err


def test_vq_gain_refit_is_logged_and_folded_into_the_checkpoint(trained, tiny_gguf, lists, tmp_path,
                                                                capsys):  # noqa: F811
    """--vq-gain-every 1: every step's least-squares gain per layer is logged (gain_l1..3), and the rescale
    lives in cb_proj (plain rows at export); it cannot be combined with a frozen quantizer."""
    out = tmp_path / "gain"
    assert main(_args(tiny_gguf, out, 4, "--data", str(lists[0]), "--init", str(trained), "--vq-gain-every", "1",
                      "--log-every", "1")) == 0
    rows = read_metrics(out / "metrics.csv")
    assert all(f"gain_l{k}" in rows[0] for k in (1, 2, 3))
    assert all(0 < r[f"gain_l{k}"] < 10 for r in rows for k in (1, 2, 3))  # the fit itself: test_quantizer
    old, _ = load_checkpoint(trained)
    new, _ = load_checkpoint(out)
    assert not torch.equal(old.quantizer.cb_proj[0].weight, new.quantizer.cb_proj[0].weight)
    with pytest.raises(SystemExit):
        main(_args(tiny_gguf, tmp_path / "bad", 1, "--data", str(lists[0]), "--vq-gain-every", "5",
                   "--freeze", "quantizer"))
    assert "--vq-gain-every rescales" in capsys.readouterr().err


def test_pitch_loss_trains_a_head_that_resumes_and_warm_starts(tiny_gguf, lists, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "pitch"
    args = ["--data", str(lists[0]), "--loss-weight", "pitch=1", "--ckpt-every", "2"]
    assert main(_args(tiny_gguf, out, 2, *args, "--log-every", "1")) == 0
    rows = read_metrics(out / "metrics.csv")
    assert all(np.isfinite(r["pitch"]) and r["pitch"] > 0 for r in rows)
    assert torch.load(out / "train_state.pt", weights_only=False)["trainer"]["pitch_head"] is not None
    assert main(_args(tiny_gguf, out, 3, *args, "--resume")) == 0
    with pytest.raises(ValueError, match="pitch loss"):
        main(_args(tiny_gguf, out, 4, "--data", str(lists[0]), "--resume"))
    from codec.publish import main as publish

    assert publish([str(out), str(tmp_path / "pub")]) == 0
    capsys.readouterr()
    assert main(_args(tiny_gguf, tmp_path / "warm", 1, *args[:2], "--loss-weight", "pitch=1", "--init",
                      str(tmp_path / "pub"))) == 0
    assert "pitch head" in capsys.readouterr().err


def test_disc_every_skips_discriminator_steps(tiny_gguf, lists, tmp_path):  # noqa: F811
    out = tmp_path / "every2"
    assert main(_args(tiny_gguf, out, 6, "--data", str(lists[0]), "--disc-every", "2", "--log-every", "1")) == 0
    rows = read_metrics(out / "metrics.csv")
    has_disc = [not np.isnan(r["disc"]) for r in rows]
    assert has_disc == [True, False, True, False, True, False], has_disc


def test_bf16_autocast_keeps_search_and_losses_float32(tiny_gguf, lists, tmp_path, tiny_codec):  # noqa: F811
    wav = 0.1 * torch.randn(2, 1, 1920 * 2, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_codec(wav)
    assert out.audio.dtype == out.z.dtype == out.zq.dtype == torch.float32
    assert all(c.dtype == torch.int64 for c in out.codes)
    disc = MultiScaleSTFTDiscriminator(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = disc(out.audio)
    assert all(lg.dtype == torch.float32 for lg in logits) and feats[0][0].dtype == torch.float32
    run = tmp_path / "bf16"
    assert main(_args(tiny_gguf, run, 4, "--data", str(lists[0]), "--bf16", "--log-every", "2")) == 0
    rows = read_metrics(run / "metrics.csv")
    assert all(np.isfinite(r["total"]) and np.isfinite(r["disc"]) for r in rows)


def test_cli_errors(tiny_gguf, trained, lists, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        main(_args(tiny_gguf, trained, 10, "--data", str(lists[0])))
    assert e.value.code == 1 and "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(VOCAB_GGUF, tmp_path / "v", 10, "--data", str(lists[0])))
    assert "vocab-only GGUF" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(tiny_gguf, tmp_path / "r", 10, "--data", str(lists[0]), "--resume"))
    assert "train_state.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(tiny_gguf, tmp_path / "m", 10, "--data", str(tmp_path / "missing")))
    assert "not found" in capsys.readouterr().err


def test_overrides_and_segment():
    assert parse_overrides(["latent_dim=96", "encoder_rates=3,4,5,8", "depthwise=false", "preset=x"]) == \
        {"latent_dim": 96, "encoder_rates": (3, 4, 5, 8), "depthwise": False, "preset": "x"}
    with pytest.raises(ValueError, match="CodecConfig field"):
        parse_overrides(["nope=1"])
    from codec.config import preset
    assert segment_samples(preset("tiny"), 1.0) == 17280  # 9 groups of 1920 samples


def test_lr_schedule():
    assert lr_factor(0, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 10, 100, "exp", 0.01) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------- losses
def test_reconstruction_losses():
    torch.manual_seed(0)
    y = torch.randn(2, 1, 8000) * 0.1
    for loss in (MultiResolutionSTFTLoss(), MultiResolutionMelLoss()):
        assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
        near, far = float(loss(y * 0.9, y)), float(loss(torch.randn_like(y) * 0.1, y))
        assert 0 < near < far


def test_semantic_and_consistency_losses():
    zq1 = torch.ones(3, 4, 8)
    target = torch.zeros(3, 4)
    mask = torch.tensor([True, False, True])
    assert float(semantic_loss(zq1, target, mask)) == pytest.approx(1.0)
    assert float(semantic_loss(zq1, target, torch.zeros(3, dtype=torch.bool))) == 0.0
    teacher = torch.arange(5.0).reshape(1, 5, 1)  # 5 frames -> nearest to 10
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4.0]).reshape(1, 10, 1)
    assert float(consistency_loss(pred, teacher)) == 0.0


def test_text_targets(tiny_gguf):  # noqa: F811
    vocab = load_vocab(tiny_gguf)
    tt = TextTargets(vocab)
    emb, mask = tt.batch(["sea waves", None, "zero"], torch.device("cpu"))
    assert mask.tolist() == [True, False, True] and emb.shape == (3, 64)
    ids = [vocab.pieces.index("\u2581sea"), vocab.pieces.index("\u2581waves")]
    np.testing.assert_allclose(emb[0].numpy(), vocab.embeddings[ids].mean(0), rtol=1e-6)
    assert torch.all(emb[1] == 0)


def test_discriminator_and_teacher():
    disc = MultiScaleSTFTDiscriminator(filters=4)
    wav = torch.randn(2, 1, 4800) * 0.1
    logits, feats = disc(wav)
    assert len(logits) == 3 and all(lg.shape[0] == 2 for lg in logits) and all(len(f) == 5 for f in feats)
    assert float(discriminator_loss(logits, logits).detach()) > 0
    mpd = discriminator_for("tiny", "mpd")
    logits, feats = mpd(wav[..., :4799])  # not a multiple of every period: reflect-padded
    assert [lg.shape[-1] for lg in logits] == [2, 3, 5, 7, 11] and all(len(f) == 5 for f in feats)
    both = discriminator_for("tiny", "both")
    logits, feats = both(wav.requires_grad_())
    assert len(logits) == len(feats) == 8
    sum(lg.mean() for lg in logits).backward()
    assert wav.grad is not None and float(wav.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="msstft"):
        discriminator_for("tiny", "mel")
    for name, dim in (("mfcc", 40), ("logmel", 80)):
        t = get_teacher(name)
        f = t(wav)
        assert f.shape == (2, 4800 // 320 + 1, dim) and not f.requires_grad
        torch.testing.assert_close(f.mean(1), torch.zeros(2, dim), atol=1e-4, rtol=0)
    assert get_teacher("none") is None
    with pytest.raises(KeyError, match="mfcc"):
        get_teacher("whisper-base")


def test_harmonic_head_warm_start_logs_the_f0_loss_and_exports(trained, tiny_gguf, lists, tmp_path,
                                                                capsys):  # noqa: F811
    """--override decoder_head=harmonic over a conv run, every step teacher-forced: the f0 term is logged,
    the oscillator parameters train, and the checkpoint reloads as a harmonic codec."""
    out = tmp_path / "harmonic"
    assert main(_args(tiny_gguf, out, 3, "--data", str(lists[0]), "--init", str(trained), "--override",
                      "decoder_head=harmonic", "--f0-teacher", "1", "--log-every", "1")) == 0
    assert "fresh: decoder.head" in capsys.readouterr().err
    rows = read_metrics(out / "metrics.csv")
    assert all(r["f0"] > 0 for r in rows)
    new, _ = load_checkpoint(out)
    assert new.cfg.decoder_head == "harmonic" and new.cfg.harmonics == 64
    bias = new.decoder.head.harmonic.conv.bias.detach()
    init = torch.full_like(bias, INIT_LOG_AMPLITUDE / PARAM_GAIN)
    init[0], init[1] = INIT_LOG_F0 / PARAM_GAIN, 0.0
    assert not torch.allclose(bias, init, atol=1e-6)  # F0, voicing and amplitudes trained from their init


def test_warm_start_under_another_teacher_starts_a_fresh_consistency_head(trained, tiny_gguf, lists, tmp_path,
                                                                          capsys):  # noqa: F811
    """The saved head maps zq to MFCC (40-d); under --teacher logmel (80-d) it cannot load: fresh, and said so."""
    out = tmp_path / "logmel"
    assert main(_args(tiny_gguf, out, 2, "--data", str(lists[0]), "--init", str(trained), "--teacher", "logmel",
                      "--log-every", "1")) == 0
    assert "consistency head fresh (the saved one is for another --teacher)" in capsys.readouterr().err
    assert torch.load(out / "train_state.pt", weights_only=False)["trainer"]["head"]["weight"].shape[0] == 80
