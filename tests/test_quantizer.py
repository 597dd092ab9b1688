"""Multi-scale LLM-codebook RVQ: search rule, ties, gradients, frozen codebooks, code shapes, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.quantizer import MultiScaleRVQ, nearest
from helpers_codec import make_codec, random_tables, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture()
def rvq() -> MultiScaleRVQ:
    cfg = tiny_config()
    torch.manual_seed(0)
    return MultiScaleRVQ(cfg, *random_tables(cfg))


def _latents(frames: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, tiny_config().latent_dim, frames, generator=torch.Generator().manual_seed(seed))


def _reference_codes(z: np.ndarray, tables: list[np.ndarray], strides: tuple[int, ...]) -> list[np.ndarray]:
    """The project's one float64 reference (kernels.reference) for one item ``z (latent, T)``."""
    from kernels.reference import rvq_reference

    normed = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in tables]
    return rvq_reference(z.T, list(zip(tables, normed)), strides)[0]


@torch.no_grad()
def test_codes_match_a_float64_reference(rvq: MultiScaleRVQ) -> None:
    z = _latents(16)
    zq, codes, _, per_layer = rvq.quantize(z)
    assert [tuple(c.shape) for c in codes] == [(2, 4), (2, 8), (2, 16)]
    assert all(c.dtype == torch.int64 for c in codes)
    rows = [r.double().numpy() for r, _ in rvq.projected_tables()]
    for b in range(2):
        for mine, ref in zip(codes, _reference_codes(z[b].double().numpy(), rows, rvq.strides)):
            np.testing.assert_array_equal(mine[b].numpy(), ref)
    # Each layer's value is its projected rows held for `stride` frames, and they sum to zq.
    for layer, (held, stride) in enumerate(zip(per_layer, rvq.strides)):
        expect = rvq.projected_tables()[layer][0][codes[layer]].transpose(1, 2).repeat_interleave(stride, -1)
        assert torch.equal(held, expect)
    assert torch.equal(rvq.from_codes(codes), zq)


@torch.no_grad()
def test_codes_of_a_group_do_not_depend_on_other_groups(rvq: MultiScaleRVQ) -> None:
    z = _latents(12)
    _, whole = rvq.quantize_groups(z)
    tables = rvq.projected_tables()
    for g in range(3):
        _, part = rvq.quantize_groups(z[..., 4 * g: 4 * g + 4], tables)
        for layer, n in enumerate((1, 2, 4)):
            assert torch.equal(part[layer], whole[layer][:, n * g: n * (g + 1)])


def test_search_is_cosine_and_ties_go_to_the_lowest_index() -> None:
    normed = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    normed[[9, 17, 30]] = torch.eye(8)[2]  # three identical best rows
    x = torch.zeros(1, 3, 8)
    x[0, :, 2] = torch.tensor([0.5, 4.0, 100.0])  # any positive scale: cosine ignores the norm
    assert nearest(x, normed).tolist() == [[9, 9, 9]]
    assert nearest(torch.zeros(1, 1, 8), normed).tolist() == [[0]]  # all-zero query: all scores tie at 0


@torch.no_grad()
def test_quantize_breaks_ties_to_the_lowest_index_in_every_layer() -> None:
    cfg = tiny_config()
    words, vocab = random_tables(cfg)
    e3 = torch.zeros(cfg.llm_dim)
    e3[3] = 1.0
    words[[7, 20, 33]] = 2.0 * e3
    vocab[[10, 11, 200]] = 7.0 * e3
    rvq = MultiScaleRVQ(cfg, words, vocab)
    for proj in rvq.cb_proj:  # identity on the first `latent` dims keeps the duplicates exact
        proj.weight.copy_(torch.eye(cfg.latent_dim, cfg.llm_dim))
        proj.bias.zero_()
    z = torch.zeros(1, cfg.latent_dim, 8)
    z[:, 3] = 5.0
    _, codes, _, _ = rvq.quantize(z)
    assert codes[0].tolist() == [[7, 7]]  # residual 5 e3 -> word rows 7/20/33, then 3 e3 left
    assert codes[1].tolist() == [[10] * 4]  # vocab rows 10/11/200 tie on direction e3


def test_codebooks_are_frozen_buffers_and_cb_proj_trains() -> None:
    model = make_codec(seed=2).train()
    q = model.quantizer
    params = {id(p) for p in model.parameters()}
    for table in (q.word_codebook, q.vocab_codebook):
        assert not table.requires_grad and id(table) not in params
    assert {"quantizer.word_codebook", "quantizer.vocab_codebook"} <= set(model.state_dict())
    assert q.codebook(1) is q.codebook(2) is q.vocab_codebook  # layers 2 and 3 share one table
    out = model(torch.randn(2, 1, 3840) * 0.1)
    (out.audio.square().mean() + out.vq_losses.commitment + out.vq_losses.codebook).backward()
    assert q.word_codebook.grad is None and q.vocab_codebook.grad is None
    for proj in q.cb_proj:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
        assert proj.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("loss,cb_proj_grad,encoder_grad", [
    pytest.param("codebook", True, False, id="codebook-loss-trains-cb_proj-only"),
    pytest.param("commitment", False, True, id="commitment-loss-trains-encoder-only"),
    pytest.param("reconstruction", False, True, id="straight-through-to-encoder"),
])
def test_gradient_routes(loss: str, cb_proj_grad: bool, encoder_grad: bool) -> None:
    model = make_codec(seed=3).train()
    out = model(torch.randn(1, 1, 1920) * 0.1)
    value = {"codebook": out.vq_losses.codebook, "commitment": out.vq_losses.commitment,
             "reconstruction": out.audio.square().mean()}[loss]
    value.backward()

    def has_grad(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert has_grad(model.quantizer.cb_proj) is cb_proj_grad
    assert has_grad(model.encoder) is encoder_grad


def test_projected_tables(rvq: MultiScaleRVQ) -> None:
    tables = rvq.projected_tables()
    assert [r.shape[0] for r, _ in tables] == [50, 300, 300]
    for layer, (rows, normed) in enumerate(tables):
        assert not rows.requires_grad
        assert torch.allclose(rows, rvq.cb_proj[layer](rvq.codebook(layer)), atol=1e-6)
        assert torch.allclose(normed.norm(dim=-1), torch.ones(len(normed)), atol=1e-6)


def test_numpy_tables_are_accepted() -> None:
    cfg = tiny_config()
    words, vocab = random_tables(cfg)
    rvq = MultiScaleRVQ(cfg, words.numpy(), vocab.numpy().astype(np.float16))
    assert rvq.vocab_codebook.dtype == torch.float32 and rvq.vocab_codebook.shape == (300, 64)


@pytest.mark.parametrize("words,vocab,match", [
    pytest.param((49, 64), (300, 64), r"word_table_size=49", id="word-rows"),
    pytest.param((50, 64), (301, 64), r"vocab_size=301", id="vocab-rows"),
    pytest.param((50, 32), (300, 32), r"llm_dim=32", id="llm-dim"),
])
def test_table_size_mismatch_is_reported(words, vocab, match) -> None:
    with pytest.raises(ValueError, match=match):
        MultiScaleRVQ(tiny_config(), torch.zeros(words), torch.zeros(vocab))


def test_bad_latents_and_codes_are_reported(rvq: MultiScaleRVQ) -> None:
    with pytest.raises(ValueError, match="multiple of the group"):
        rvq.quantize(_latents(6))
    with pytest.raises(ValueError, match="expects latents"):
        rvq.quantize(torch.zeros(1, 3, 8))
    _, codes = rvq.quantize_groups(_latents(8))
    with pytest.raises(ValueError, match=r"layer-2 codes must lie in \[0, 300\)"):
        rvq.from_codes([codes[0], codes[1] + 300, codes[2]])
    with pytest.raises(ValueError, match="do not describe one"):
        rvq.from_codes([codes[0], codes[1][:, :1], codes[2]])
    with pytest.raises(ValueError, match="expected 3 code layers"):
        rvq.from_codes(codes[:2])


def test_match_gains_refits_each_layer_scale_in_closed_form() -> None:
    """A row-length mismatch (rows 4x too short) is found and removed: the factors fold into cb_proj, layer-1
    codes do not move (the search is by direction), the residual shrinks, and a second fit changes nothing."""
    cfg = tiny_config()
    rvq = MultiScaleRVQ(cfg, *random_tables(cfg))
    with torch.no_grad():
        for proj in rvq.cb_proj:
            proj.weight.mul_(0.25)
            proj.bias.mul_(0.25)
    z = torch.randn(2, cfg.latent_dim, 16, generator=torch.Generator().manual_seed(3)) * 3
    with torch.no_grad():
        zq0, codes0, _, _ = rvq.quantize(z)
        factors = rvq.match_gains(z, limit=100.0)
        zq1, codes1, _, _ = rvq.quantize(z)
        again = rvq.match_gains(z)
    assert factors[0] > 2 and all(f > 1 for f in factors), factors
    assert torch.equal(codes0[0], codes1[0])
    assert float((z - zq1).norm()) < float((z - zq0).norm())
    assert again == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    zq, _, _, _ = rvq.quantize(z.requires_grad_())  # with grad: the least-squares gains are kept for logging
    assert rvq.last_gains == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
