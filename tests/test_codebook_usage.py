"""Codebook collapse: the usage-entropy loss, its wiring in the quantizer, centred init, and a short
training run on real FSDD audio that must keep many codes in use on a held-out batch."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_llm import tiny_gguf  # noqa: F401  (pytest fixture)

from codec.losses import codebook_usage_loss
from codec.quantizer import MultiScaleRVQ, nearest
from codec.train import main
from codec.training.state import read_metrics
from helpers_codec import make_codec, random_tables, tiny_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------------------ the loss
def _one_hot_scores(codes: list[int], n: int) -> torch.Tensor:
    """Scores that make ``softmax(scores / tau)`` essentially one-hot on ``codes`` for small tau."""
    return F.one_hot(torch.tensor(codes), n).float()


def test_usage_loss_is_lowest_for_confident_uniform_usage() -> None:
    n = 8
    spread = codebook_usage_loss(_one_hot_scores(list(range(n)), n), tau=1e-3)
    assert float(spread) == pytest.approx(-1.0, abs=1e-4)  # -log N / log N: the minimum
    collapsed = codebook_usage_loss(_one_hot_scores([3] * n, n), tau=1e-3)
    assert float(collapsed) == pytest.approx(0.0, abs=1e-4)  # one codeword for every query
    half = codebook_usage_loss(_one_hot_scores([0, 1, 2, 3] * 2, n), tau=1e-3)
    assert float(half) == pytest.approx(-math.log(4) / math.log(n), abs=1e-4)
    uncertain = codebook_usage_loss(torch.zeros(n, n), tau=0.1)  # flat per query: no preference at all
    assert float(uncertain) == pytest.approx(0.0, abs=1e-6)


def test_usage_loss_is_bounded_and_differentiable() -> None:
    scores = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)).clamp(-1, 1).requires_grad_()
    value = codebook_usage_loss(scores, tau=0.05)
    assert -1.0 <= float(value.detach()) <= 1.0
    value.backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        codebook_usage_loss(scores, tau=0.0)
    with pytest.raises(ValueError, match=r"\(M, N\)"):
        codebook_usage_loss(torch.zeros(4), tau=0.1)


# ------------------------------------------------------------------------------- the quantizer
def test_entropy_term_uses_the_search_codes_and_trains_encoder_and_cb_proj() -> None:
    model = make_codec(seed=4).train()
    wav = torch.randn(2, 1, 3840, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        plain = model(wav)
    assert float(plain.vq_losses.entropy) == 0.0  # off unless entropy_tau is set
    model.quantizer.entropy_tau = 0.05
    out = model(wav)
    for a, b in zip(out.codes, plain.codes):  # the grad-carrying scores pick exactly the same codes
        assert torch.equal(a, b)
    assert -3.0 <= float(out.vq_losses.entropy.detach()) < 0.0  # three layers, each in [-1, 0) for a spread batch
    out.vq_losses.entropy.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    for proj in model.quantizer.cb_proj:  # spreading the table's directions is cb_proj's share
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())
    with torch.no_grad():  # evaluation: no score matrix is kept, the term is 0
        assert float(model(wav).vq_losses.entropy) == 0.0


def test_projected_rows_start_centred() -> None:
    cfg = tiny_config()
    words, vocab = random_tables(cfg)
    offset = torch.zeros(cfg.llm_dim)
    offset[0] = 50.0  # a large common direction, as in real LLM embedding tables
    torch.manual_seed(0)
    rvq = MultiScaleRVQ(cfg, words + offset, vocab + offset)
    for rows, normed in rvq.projected_tables():
        torch.testing.assert_close(rows.mean(0), torch.zeros(cfg.latent_dim), atol=1e-4, rtol=0)
        # without centring every row would point along W @ offset (mean |cos| to it ~1)
        assert float((normed @ F.normalize(normed.mean(0) + 1e-9, dim=0)).abs().mean()) < 0.5
    codes = nearest(torch.randn(1, 64, cfg.latent_dim, generator=torch.Generator().manual_seed(2)),
                    rvq.projected_tables()[1][1])
    assert codes.unique().numel() > 20  # random queries land on many different rows


# --------------------------------------------------------------------------- short training run
def _fsdd_list(path: Path, takes: range, speakers=("jackson", "george", "lucas", "nicolas")) -> Path:
    files = [FSDD / f"{d}_{s}_{t}.wav" for d in range(10) for s in speakers for t in takes]
    path.write_text("\n".join(map(str, files)) + "\n")
    return path


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared data missing: {FSDD}")
def test_short_training_keeps_many_codes_in_use(tiny_gguf, tmp_path) -> None:  # noqa: F811
    # takes 0-4 are FSDD's test split: held out for the evaluation batch
    train_lst, eval_lst = _fsdd_list(tmp_path / "train.lst", range(5, 8)), _fsdd_list(tmp_path / "e.lst", range(0, 1))
    out = tmp_path / "run"
    # A constant LR and a stronger entropy weight than the default (5) let 40 steps (~15 s) show the effect;
    # with --loss-weight entropy=0 the same run ends at 3 / 7 / 15 codes (layers 1 / 2 / 3).
    args = ["--preset", "tiny", "--llm", str(tiny_gguf), "--out", str(out), "--steps", "40",
            "--batch-size", "8", "--segment-seconds", "0.6", "--lr", "3e-3", "--warmup", "5", "--schedule", "constant",
            "--device", "cpu", "--data", str(train_lst), "--eval-data", str(eval_lst), "--log-every", "10",
            "--ckpt-every", "1000", "--seed", "0", "--no-progress", "--threads", "1", "--no-adversarial",
            "--loss-weight", "entropy=20"]
    assert main(args) == 0
    evals = read_metrics(out / "eval.csv")
    first, last = evals[0], evals[-1]
    # Held-out batch: 8 clips x 0.6 s -> 40 layer-1, 80 layer-2, 160 layer-3 codes. Measured with the fix:
    # 21 / 60 / 130 (seed 0) and 31 / 77 / 155 (seed 1); collapsed runs stay at 1-5 layer-1 words.
    assert last["used_l1"] >= 10 and last["used_l2"] >= 30 and last["used_l3"] >= 60, last
    for k in (1, 2, 3):  # the histogram's entropy: above a collapse's, at most log2 of the codes in use
        assert 2.0 < last[f"entropy_l{k}"] <= np.log2(last[f"used_l{k}"]) + 1e-9, last
    assert last["recon"] < 0.5 * first["recon"], (first, last)
    rows = read_metrics(out / "metrics.csv")
    assert all(r["entropy"] < 0 for r in rows) and rows[-1]["entropy"] < rows[0]["entropy"]


# --------------------------------------------------------------------------------- --entropy-every
def test_entropy_every_n_computes_the_term_on_every_nth_step_weighted_n() -> None:
    from codec.training.objective import GeneratorObjective, LossWeights
    from codec.training.state import DistInfo
    from codec.training.trainer import OptimConfig, Trainer

    model = make_codec(seed=0)
    model.quantizer.entropy_tau = 0.05
    weights = LossWeights().update(["entropy=0.5", "semantic=0", "consistency=0"])
    objective = GeneratorObjective(model.cfg.latent_dim, model.cfg.sample_rate, weights, None, None)
    trainer = Trainer(model, objective, None, OptimConfig(lr=0.0, warmup=0, entropy_every=3), 10, DistInfo(),
                      torch.device("cpu"))
    trainer.train()
    wav = 0.1 * torch.randn(2, 1, int(np.prod(model.cfg.encoder_rates)) * 16, generator=torch.Generator().manual_seed(1))
    logs = [trainer.step(wav, [None, None], s) for s in range(6)]
    assert [("entropy" in row) for row in logs] == [True, False, False, True, False, False]
    for row in logs:  # lr 0: the model is unchanged, so the off steps' total is the on steps' less 3 x 0.5 x entropy
        rest = sum(getattr(weights, k) * row[k] for k in ("stft", "mel", "commitment", "codebook"))
        expected = rest + (3 * 0.5 * row["entropy"] if "entropy" in row else 0.0)
        assert row["total"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert logs[0]["entropy"] < 0 and logs[0]["total"] < logs[1]["total"]
    assert model.quantizer.entropy_tau is None and trainer.entropy_tau == 0.05  # restored on the next on-step
