"""numpy nearest-codeword path (kernels/cpu.py) and the torch-free dispatcher (issue 4)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tolerances import TOLERANCES, assert_values_close, check_codes

import kernels
from kernels.cpu import NumpyNearest, NumpyRvq, nearest_codeword_np, rvq_step_np

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent / "shared" / "data" / "llm" / "stories260K" / "checkpoint_legacy.bin"


def normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_case(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codebook (n, d) unit rows; queries half near codewords (like real latents), half random."""
    rng = np.random.default_rng(seed)
    cb = normed(rng.standard_normal((n, d))).astype(np.float32)
    near = cb[rng.integers(0, n, m)] * rng.uniform(0.5, 3.0, (m, 1)) + 0.05 * rng.standard_normal((m, d))
    q = np.where(np.arange(m)[:, None] % 2 == 0, near, rng.standard_normal((m, d)))
    return q.astype(np.float32), cb


def ref_scores(q: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Full (M, N) cosine matrix in float64: the test-only reference (tiny shapes)."""
    q64 = q.astype(np.float64)
    q64 = q64 / np.maximum(np.linalg.norm(q64, axis=1, keepdims=True), 1e-12)
    return q64 @ cb.astype(np.float64).T


def stories_table() -> np.ndarray:
    """The real 512 x 64 token-embedding table of the TinyStories-260K LLaMA (llama2.c legacy file:
    7 int32 header fields, then the float32 embedding table)."""
    if not STORIES.exists():
        pytest.skip(f"shared test data missing: {STORIES}")
    dim, vocab = np.fromfile(STORIES, np.int32, count=7)[[0, 5]]
    return np.fromfile(STORIES, np.float32, count=abs(vocab) * dim, offset=28).reshape(abs(vocab), dim)


@pytest.mark.parametrize("m,n,d,block_m,block_n", [
    pytest.param(1, 3000, 64, 256, 4096, id="m1-single-block"),
    pytest.param(14, 3000, 64, 8, 700, id="m14-ragged-blocks"),
    pytest.param(300, 1000, 48, 64, 128, id="m300-many-blocks"),
    pytest.param(5, 7, 3, 2, 3, id="tiny"),
])
def test_matches_full_matrix_reference(m: int, n: int, d: int, block_m: int, block_n: int) -> None:
    q, cb = make_case(m, n, d)
    idx, score = NumpyNearest(cb, block_m=block_m, block_n=block_n).search(q)
    assert idx.dtype == np.int64 and score.dtype == np.float32 and idx.shape == score.shape == (m,)
    s = ref_scores(q, cb)
    tol = TOLERANCES["nearest_numpy_f32_vs_ref"]
    rate = check_codes(idx, s, tol)
    assert_values_close(score, s.max(axis=1), tol, what="scores")
    print(f"near-tie mismatch rate {rate:.3%}")


def test_real_llm_embedding_table() -> None:
    table = stories_table()
    cb = normed(table).astype(np.float32)
    rng = np.random.default_rng(1)
    # about half the 512 rows (byte/unused tokens) are near-duplicates: draw targets among the rest
    gram = cb @ cb.T
    np.fill_diagonal(gram, -1.0)
    distinct = np.flatnonzero(gram.max(axis=1) < 0.99)
    ids = rng.choice(distinct, 200)
    q = table[ids] + 0.05 * table.std() * rng.standard_normal((200, table.shape[1])).astype(np.float32)
    idx, score = nearest_codeword_np(q, cb, block_n=100)
    s = ref_scores(q, cb)
    tol = TOLERANCES["nearest_numpy_f32_vs_ref"]
    check_codes(idx, s, tol)
    assert_values_close(score, s.max(axis=1), tol, what="scores")
    assert (idx == ids).mean() > 0.9  # small noise: most queries find their own token


def test_agrees_with_torch_reference() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from kernels.nearest import nearest_codeword_reference

    q, cb = make_case(64, 2000, 96, seed=3)
    r_idx, r_score = nearest_codeword_reference(torch.from_numpy(q), torch.from_numpy(cb))
    idx, score = nearest_codeword_np(q, cb, block_n=512)
    tol = TOLERANCES["nearest_numpy_f32_vs_ref"]
    check_codes(idx, ref_scores(q, cb), tol)
    assert (idx == r_idx.numpy()).mean() >= 1 - tol.max_tie_rate
    assert_values_close(score, r_score, tol, what="scores vs torch")


def sparse_codebook(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit rows with four +-0.5 entries: dot products with integer queries are exact in any
    summation order, so duplicated rows give true ties (BLAS rounding can differ by column)."""
    rng = np.random.default_rng(seed)
    cb = np.zeros((n, d), np.float32)
    for i in range(n):
        cb[i, rng.permutation(d)[:4]] = rng.choice([-0.5, 0.5], 4)
    return cb


def test_lowest_index_wins_ties_across_blocks() -> None:
    cb = sparse_codebook(300, 16)
    for dup in (70, 200, 299):
        cb[dup] = cb[5]
    cb[250] = cb[100]
    queries = np.stack([cb[5] * 6.0, cb[100] * 2.0, np.zeros(16, np.float32), cb[5] * 2.0 + cb[7]])
    idx, score = NumpyNearest(cb, block_m=2, block_n=64).search(queries)
    assert idx.tolist() == [5, 100, 0, 5]  # zero query: all scores 0 -> index 0
    np.testing.assert_allclose(score[:3], [1.0, 1.0, 0.0], atol=1e-6)


def test_fp16_codebook_is_upcast() -> None:
    q, cb = make_case(20, 500, 32)
    cb16 = cb.astype(np.float16)
    idx, score = nearest_codeword_np(q, cb16)
    s = ref_scores(q, cb16.astype(np.float32))
    tol = TOLERANCES["nearest_numpy_f32_vs_ref"]
    check_codes(idx, s, tol)
    assert_values_close(score, s.max(axis=1), tol, what="scores")


@pytest.mark.parametrize("queries,codebook,match", [
    pytest.param(np.zeros(4, np.float32), np.zeros((3, 4), np.float32), "2-D", id="1d-queries"),
    pytest.param(np.zeros((2, 5), np.float32), np.ones((3, 4), np.float32), "D=5", id="dim-mismatch"),
    pytest.param(np.zeros((2, 4), np.float32), np.zeros((0, 4), np.float32), "non-empty", id="empty-codebook"),
    pytest.param(np.zeros((2, 4), np.int32), np.ones((3, 4), np.float32), "float", id="int-queries"),
])
def test_bad_input_errors(queries: np.ndarray, codebook: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nearest_codeword_np(queries, codebook)


def make_tables(d: int, sizes: tuple[int, ...] = (40, 300, 300), seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tables = []
    for n in sizes:
        rows = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.2, 2.0, (n, 1)).astype(np.float32)
        tables.append((rows, normed(rows).astype(np.float32)))
    return tables


def test_rvq_matches_torch_reference() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from kernels.rvq import rvq_step_reference

    tables = make_tables(24)
    x = np.random.default_rng(5).standard_normal((3, 16, 24)).astype(np.float32)
    codes, quant = rvq_step_np(x, tables)
    t_tables = [(torch.from_numpy(r), torch.from_numpy(n)) for r, n in tables]
    r_codes, r_quant = rvq_step_reference(torch.from_numpy(x), t_tables)
    assert [c.shape for c in codes] == [(3, 4), (3, 8), (3, 16)]
    for c, rc in zip(codes, r_codes):
        np.testing.assert_array_equal(c, rc.numpy())
    assert_values_close(quant, r_quant, TOLERANCES["rvq_numpy_vs_ref"], what="quantised")


def test_rvq_is_residual_and_group_local() -> None:
    tables = make_tables(16, seed=2)
    x = np.random.default_rng(6).standard_normal((12, 16)).astype(np.float32)
    rvq = NumpyRvq(tables)
    codes, quant = rvq(x)
    assert [c.shape for c in codes] == [(3,), (6,), (12,)]
    # quantised = sum over layers of the unnormalised rows held for `stride` frames
    rebuilt = sum(np.repeat(rows[c], s, axis=0) for (rows, _), c, s in zip(tables, codes, (4, 2, 1)))
    np.testing.assert_allclose(quant, rebuilt, atol=1e-5)
    # streaming group by group gives the same codes as the whole chunk
    parts = [rvq(x[g : g + 4]) for g in range(0, 12, 4)]
    for layer in range(3):
        np.testing.assert_array_equal(np.concatenate([p[0][layer] for p in parts]), codes[layer])
    with pytest.raises(ValueError, match="whole number"):
        rvq(x[:6])
    with pytest.raises(ValueError, match="tables"):
        NumpyRvq(tables, strides=(4, 2))


def test_dispatcher_numpy_and_bad_backend() -> None:
    q, cb = make_case(6, 100, 8)
    idx, score = kernels.nearest_codeword(q, cb)
    assert isinstance(idx, np.ndarray)
    np.testing.assert_array_equal(idx, nearest_codeword_np(q, cb)[0])
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.nearest_codeword(q, cb, backend="cuda")


def test_dispatcher_torch_cpu_tensors_use_reference() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    q, cb = make_case(6, 100, 8)
    idx, _ = kernels.nearest_codeword(torch.from_numpy(q), torch.from_numpy(cb))
    assert isinstance(idx, torch.Tensor)
    np.testing.assert_array_equal(idx.numpy(), nearest_codeword_np(q, cb)[0])


def test_import_and_search_without_torch_or_triton() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        sys.modules["triton"] = None
        import numpy as np
        import kernels
        cb = np.eye(4, dtype=np.float32)
        idx, score = kernels.nearest_codeword(np.array([[0, 3, 1, 0]], np.float32), cb)
        codes, quant = kernels.rvq_step(np.ones((4, 4), np.float32), [(cb, cb)] * 3)
        assert idx.tolist() == [1] and codes[0].tolist() == [0], (idx, codes)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
