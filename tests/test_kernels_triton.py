"""Triton nearest-codeword kernel and residual step (kernels/nearest.py, kernels/rvq.py), issue 4.

Without CUDA the same kernels run under the Triton CPU interpreter at small shapes; the env var
must be set before any ``@triton.jit`` function is defined (triton's own ``tl.*`` helpers included),
so it is set here before importing triton; if triton was already imported, the file re-runs itself
in a fresh subprocess (a ``tests/conftest.py`` that sets it first would avoid that). Full-size
cases carry the ``gpu`` marker and skip with a reason on machines without CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()
# triton's own tl.* helpers are defined when triton is imported (torch._dynamo imports it): if that
# happened before TRITON_INTERPRET was set, the interpreter cannot run in this process, and
# test_rerun_in_fresh_process runs this file again in a subprocess with the variable set first.
STALE_TRITON = (not HAS_CUDA and "triton" in sys.modules
                and os.environ.get("TRITON_INTERPRET") != "1")
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import kernels  # noqa: E402
import kernels.nearest as kn  # noqa: E402
import kernels.rvq as kr  # noqa: E402

from tolerances import TOLERANCES, assert_values_close, check_codes  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.fixture(autouse=True)
def _fresh_triton_only(request: pytest.FixtureRequest) -> None:
    if STALE_TRITON and request.node.name != "test_rerun_in_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET=1: run by test_rerun_in_fresh_process")
DEV = "cuda" if HAS_CUDA else "cpu"
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none on this machine)")
STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llm" / "stories260K" / "checkpoint_legacy.bin"
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def make_case(m: int, n: int, d: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 queries (half near codewords, half random) and a unit-row codebook in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    cb = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    near = cb[torch.randint(0, n, (m,), generator=g)] * 2.0 + 0.05 * torch.randn(m, d, generator=g)
    q = torch.where((torch.arange(m) % 2 == 0)[:, None], near, torch.randn(m, d, generator=g))
    return q.to(DEV), cb.to(dtype).to(DEV)


def full_scores(q: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """(M, N) fp32 reference cosine matrix of the inputs as stored."""
    return torch.nn.functional.normalize(q.float(), dim=1, eps=1e-12) @ cb.float().T


def check_against_reference(q: torch.Tensor, cb: torch.Tensor, q_dtype: torch.dtype, **kw) -> float:
    """Kernel vs fp32 reference under the tolerance table's row for the codebook dtype."""
    name = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[cb.dtype]
    tol = TOLERANCES[f"nearest_triton_{name}_vs_ref"].at_dim(cb.shape[1])
    q = q.to(q_dtype)
    idx, score = kn.nearest_codeword_triton(q, cb, **kw)
    assert idx.dtype == torch.int64 and score.dtype == torch.float32 and idx.shape == (q.shape[0],)
    _, ref = kn.nearest_codeword_reference(q, cb)
    _, lowp = kn.nearest_codeword_reference(q, cb, compute_dtype=cb.dtype)
    rate = check_codes(idx, full_scores(q, cb), tol)
    assert_values_close(score, ref, tol, lowp=lowp, what=f"{name} scores")
    return rate


@pytest.mark.parametrize("dtype,q_dtype", [
    pytest.param("f32", "f32", id="f32"),
    pytest.param("f16", "f16", id="f16"),
    pytest.param("f16", "f32", id="f16-cb-f32-q"),
    pytest.param("bf16", "bf16", id="bf16"),
    pytest.param("bf16", "f32", id="bf16-cb-f32-q"),
])
@pytest.mark.parametrize("m,n,d,splits", [
    pytest.param(5, 300, 64, None, id="m5-auto-split"),
    pytest.param(17, 130, 40, 1, id="m17-one-split-ragged-d"),
])
def test_matches_reference(dtype: str, q_dtype: str, m: int, n: int, d: int, splits: int | None) -> None:
    q, cb = make_case(m, n, d, DTYPES[dtype])
    rate = check_against_reference(q, cb, DTYPES[q_dtype], num_splits=splits)
    print(f"{dtype} near-tie mismatch rate {rate:.3%}")


def sparse_codebook(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Unit rows with four +-0.5 entries: dot products with integer queries are exact in any
    summation order, so duplicated rows give true ties (BLAS/MMA rounding can differ by column)."""
    g = torch.Generator().manual_seed(seed)
    cb = torch.zeros(n, d)
    for i in range(n):
        cb[i, torch.randperm(d, generator=g)[:4]] = 0.5 * (torch.randint(0, 2, (4,), generator=g) * 2 - 1).float()
    return cb


def test_lowest_index_wins_ties_across_tiles_and_splits() -> None:
    cb = sparse_codebook(200, 32)
    cb[[40, 150]] = cb[5].clone()  # another tile, another split (4 splits of 50)
    cb[101] = cb[100].clone()  # same tile
    q = torch.stack([cb[5] * 6.0, cb[100] * 2.0, torch.zeros(32), cb[150] * 2.0 + cb[7]])
    idx, score = kn.nearest_codeword_triton(q.to(DEV), cb.to(DEV), num_splits=4)
    assert idx.tolist() == [5, 100, 0, 5]
    torch.testing.assert_close(score.cpu()[:3], torch.tensor([1.0, 1.0, 0.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pool", [2, 4])
def test_pooled_queries(pool: int) -> None:
    q, cb = make_case(6 * pool, 150, 32, torch.float32, seed=pool)
    idx, score = kn.nearest_codeword_triton(q, cb, pool=pool)
    r_idx, r_score = kn.nearest_codeword_reference(q, cb, pool=pool)
    pooled = q.reshape(6, pool, 32).mean(dim=1)
    check_codes(idx, full_scores(pooled, cb), TOLERANCES["nearest_triton_f32_vs_ref"])
    assert_values_close(score, r_score, TOLERANCES["nearest_triton_f32_vs_ref"], lowp=r_score)


def test_real_llm_embedding_table_f16() -> None:
    if not STORIES.exists():
        pytest.skip(f"shared test data missing: {STORIES}")
    dim, vocab = np.fromfile(STORIES, np.int32, count=7)[[0, 5]]
    table = torch.from_numpy(np.fromfile(STORIES, np.float32, count=vocab * dim, offset=28).reshape(vocab, dim))
    cb = torch.nn.functional.normalize(table, dim=1).half().to(DEV)
    g = torch.Generator().manual_seed(0)
    q = (table[torch.randint(0, vocab, (12,), generator=g)] + 0.05 * torch.randn(12, dim, generator=g)).to(DEV)
    check_against_reference(q, cb, torch.float32)


def make_tables(d: int, sizes: tuple[int, ...] = (40, 120, 120), seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        rows = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g).add(0.2)
        out.append((rows.to(DEV), torch.nn.functional.normalize(rows, dim=1).to(DEV)))
    return out


@pytest.mark.parametrize("shape", [pytest.param((8, 24), id="T-D"), pytest.param((2, 4, 24), id="B-T-D")])
def test_rvq_step_matches_reference(shape: tuple[int, ...]) -> None:
    tables = make_tables(24)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(DEV)
    codes, quant = kernels.rvq_step(x, tables, backend="triton")
    r_codes, r_quant = kr.rvq_step_reference(x, tables)
    for c, rc in zip(codes, r_codes):
        assert c.shape == rc.shape
        assert torch.equal(c.cpu(), rc.cpu())
    assert quant.shape == x.shape
    assert_values_close(quant, r_quant, TOLERANCES["rvq_triton_f32_vs_ref"], what="quantised")
    np_codes, _ = kernels.rvq_step(x.cpu().numpy(), [(r.cpu().numpy(), n.cpu().numpy()) for r, n in tables])
    for c, nc in zip(codes, np_codes):
        np.testing.assert_array_equal(c.cpu().numpy(), nc)


def test_rvq_step_on_a_non_contiguous_latent() -> None:
    """A transposed view (what `latent.T` of a decoder-layout tensor gives) quantises like its copy."""
    tables = make_tables(24)
    base = torch.randn(24, 8, generator=torch.Generator().manual_seed(2)).to(DEV)
    view = base.T  # (8, 24), not contiguous
    assert not view.is_contiguous()
    codes, quant = kernels.rvq_step(view, tables, backend="triton")
    r_codes, r_quant = kr.rvq_step_reference(view.contiguous(), tables)
    assert all(torch.equal(c.cpu(), rc.cpu()) for c, rc in zip(codes, r_codes))
    assert_values_close(quant, r_quant, TOLERANCES["rvq_triton_f32_vs_ref"], what="quantised")


def test_large_queries_do_not_overflow_an_f16_table() -> None:
    """Queries are normalised in fp32 before the fp16 dot: |q| of 1e6 must not become inf."""
    q, cb = make_case(8, 64, 32, torch.float16, seed=3)
    idx, score = kernels.nearest_codeword(q * 1e6, cb, backend="triton")
    assert torch.isfinite(score).all()
    check_codes(idx, full_scores(q, cb), TOLERANCES["nearest_triton_f16_vs_ref"], what="large queries")


def test_runtime_triton_searcher_matches_the_numpy_one() -> None:
    """The runtime's GPU search (numpy in/out, one TritonRvq per chunk length) gives the numpy path's codes."""
    from runtime.rvq import make_rvq

    tables = [(r.cpu().numpy(), n.cpu().numpy()) for r, n in make_tables(24)]
    gpu, cpu = make_rvq(tables, (4, 2, 1), "triton"), make_rvq(tables, (4, 2, 1), "numpy")
    for frames in (4, 8, 4):  # two chunk lengths, the first one again (its TritonRvq is reused)
        x = np.random.default_rng(frames).standard_normal((frames, 24)).astype(np.float32)
        (gc, gq), (cc, cq) = gpu(x), cpu(x)
        assert all(np.array_equal(a, b) for a, b in zip(gc, cc)) and gq.shape == x.shape
        np.testing.assert_allclose(gq, cq, atol=1e-5)
    assert sorted(gpu._by_frames) == [4, 8]


def test_dispatcher_and_errors() -> None:
    q, cb = make_case(3, 64, 16, torch.float32)
    idx, _ = kernels.nearest_codeword(q, cb, backend="triton")
    assert torch.equal(idx.cpu(), kn.nearest_codeword_reference(q, cb)[0].cpu())
    with pytest.raises(ValueError, match="D=8"):
        kn.nearest_codeword_triton(q[:, :8], cb)
    with pytest.raises(ValueError, match="pool"):
        kn.nearest_codeword_triton(q, cb, pool=2)
    with pytest.raises(ValueError, match="dtype"):
        kn.nearest_codeword_triton(q, cb.double())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("m,n,d", [
    pytest.param(1, 32000, 512, id="m1-32k"), pytest.param(14, 32000, 512, id="m14-32k"),
    pytest.param(14, 3000, 512, id="m14-3k"), pytest.param(1024, 32000, 512, id="m1k-32k"),
    pytest.param(64, 32000, 4096, id="m64-32k-d4096"), pytest.param(4096, 3000, 4096, id="m4k-3k-d4096"),
])
def test_full_size_on_gpu(dtype: str, m: int, n: int, d: int) -> None:
    q, cb = make_case(m, n, d, DTYPES[dtype])
    rate = check_against_reference(q, cb, DTYPES[dtype])
    print(f"{dtype} m={m} n={n} d={d}: near-tie mismatch rate {rate:.3%}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 14, 1024])
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_full_size_ties_cross_split_and_tile_boundaries(m: int, dtype: str) -> None:
    """A 32k x 512 table with exact duplicates and near-duplicates placed in different tiles and
    splits: exact ties go to the lowest index, near-ties obey the shared rule, at every M regime."""
    n, d = 32000, 512
    g = torch.Generator().manual_seed(3)
    cb = torch.zeros(n, d)
    cols = torch.rand(n, d, generator=g).argsort(dim=1)[:, :4]
    cb.scatter_(1, cols, 0.5 * (torch.randint(0, 2, (n, 4), generator=g) * 2 - 1).float())
    n_per_split, splits = kn.plan_splits(m, n, torch.device(DEV))
    assert splits > 1
    dup = [7, n_per_split + 7, n - 1]  # first split, second split, last row of the last tile
    for i in dup[1:]:
        cb[i] = cb[dup[0]]
    near = [100, n_per_split + 129, n - 2]  # 1e-6 apart: a near-tie the kernel may flip
    for i in near[1:]:
        cb[i] = cb[near[0]]
    cb[near[1], 0] += 1e-6
    cb = torch.nn.functional.normalize(cb, dim=1)
    picks = torch.tensor([dup[1], near[2], 5, n - 3] * (m // 4 + 1))[:m]
    q = (cb[picks] * 3.0).to(DEV)
    table = cb.to(DTYPES[dtype]).to(DEV)
    idx, _ = kn.nearest_codeword_triton(q, table)
    exact = picks == dup[1]
    assert (idx.cpu()[exact] == dup[0]).all(), "an exact tie across splits must go to the lowest index"
    tol = TOLERANCES[f"nearest_triton_{dtype}_vs_ref"].at_dim(d)
    check_codes(idx, full_scores(q.to(DTYPES[dtype]), table), tol, what=f"{dtype} m={m} ties")


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_rvq_replays_fresh_inputs() -> None:
    """Graph replay on fresh inputs equals the float64 reference under the shared near-tie rule."""
    from kernels.reference import code_mismatches, rvq_reference

    tables = make_tables(512, sizes=(3000, 32000, 32000))
    np_tables = [(r.cpu().numpy(), n.cpu().numpy()) for r, n in tables]
    tol = TOLERANCES["rvq_triton_f32_vs_ref"].at_dim(512)
    rvq = kr.TritonRvq(tables, batch=1, frames=4)
    for seed in (1, 2, 3):
        x = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(seed)).to(DEV)
        codes, quant = rvq(x)
        ref_codes, gaps, ref_quant = rvq_reference(x[0].cpu().numpy(), np_tables, (4, 2, 1))
        got = [c.reshape(-1).cpu().numpy() for c in codes]
        counts = code_mismatches(ref_codes, got, gaps, (4, 2, 1), tol.tie_eps)
        assert counts["hard"] == 0, counts
        if counts["mismatch"] == 0:
            assert_values_close(quant[0], torch.from_numpy(ref_quant), tol, what="graph quantised")
    assert rvq._graph is not None


def test_rerun_in_fresh_process() -> None:
    if not STALE_TRITON:
        pytest.skip("the interpreter tests ran in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "not rerun"], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
