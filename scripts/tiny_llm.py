"""Build a tiny but real LLaMA GGUF with the LLaMA-2 vocabulary (torch-free: numpy + gguf).

The project has no LLaMA-2 weights, only the vocabulary. Tests and benchmarks of the few-shot
engine therefore run llama.cpp on a small seeded random model that shares LLaMA-2's 32,000
pieces, scores, token types and special ids, so every id the codec emits is a valid token.

`reference_logits(path, ids)` is a plain numpy forward pass of the same file (RMSNorm,
adjacent-pair "NORM" RoPE, causal grouped-query attention, SwiGLU); a test checks llama.cpp
agrees with it, which proves the fixture is a real model and not just a loadable file.

CLI: ``python -m scripts.tiny_llm --out tiny.gguf [--dim 64 --layers 2 --seed 0 --force]``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.cli import atomic_path, die, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VOCAB_GGUF = REPO_ROOT.parent / "shared" / "data" / "vocab" / "ggml-vocab-llama-spm.gguf"
ROPE_FREQ_BASE = 10000.0
RMS_EPS = 1e-5
# Logit std target: large enough that softmax is far from uniform, small enough that
# greedy decoding is not stuck on one id.
LOGIT_STD = 3.0


@dataclass(frozen=True)
class TinyLlmConfig:
    """Hyper-parameters of the tiny model (LLaMA architecture)."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_dim: int | None = None
    ctx: int = 2048

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn(self) -> int:
        # LLaMA's 8/3·dim rounded up to a multiple of 32.
        return self.ffn_dim or (-(-(8 * self.dim // 3) // 32) * 32)

    def validate(self) -> None:
        if self.dim % self.n_heads or self.head_dim % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even size")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")
        if min(self.dim, self.n_layers, self.ctx) <= 0:
            raise ValueError("dim, n_layers and ctx must be positive")


def read_vocab_fields(vocab_gguf: str | Path) -> list[tuple[str, object, list]]:
    """Return ``(key, value, types)`` for every ``tokenizer.ggml.*`` key of a GGUF."""
    import gguf

    path = Path(vocab_gguf)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary GGUF not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:  # gguf raises a bare "GGUF magic invalid" for any other file
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from None
    out = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            out.append((key, field.contents(), list(field.types)))
    if not any(k == "tokenizer.ggml.tokens" for k, _, _ in out):
        raise ValueError(f"{path} has no tokenizer.ggml.tokens: not a vocabulary GGUF")
    return out


def init_weights(cfg: TinyLlmConfig, n_vocab: int, seed: int = 0,
                 embeddings: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Seeded random LLaMA weights, numpy (out, in) order, float32.

    Scales: projections N(0, 1/in) keep the residual stream O(1); the output head is scaled so
    logits have std ~LOGIT_STD after the final RMSNorm (whose output has unit RMS).
    """
    rng = np.random.default_rng(seed)
    d, hd, f = cfg.dim, cfg.head_dim, cfg.ffn

    def lin(n_out: int, n_in: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    if embeddings is None:
        emb = rng.standard_normal((n_vocab, d)).astype(np.float32)
    else:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape != (n_vocab, d):
            raise ValueError(f"embeddings must be ({n_vocab}, {d}), got {emb.shape}")
    w = {"token_embd.weight": emb}
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = lin(cfg.n_heads * hd, d)
        w[p + "attn_k.weight"] = lin(cfg.n_kv_heads * hd, d)
        w[p + "attn_v.weight"] = lin(cfg.n_kv_heads * hd, d)
        w[p + "attn_output.weight"] = lin(d, cfg.n_heads * hd, 0.5)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = lin(f, d)
        w[p + "ffn_up.weight"] = lin(f, d)
        w[p + "ffn_down.weight"] = lin(d, f, 0.5)
    w["output_norm.weight"] = norm()
    w["output.weight"] = lin(n_vocab, d, LOGIT_STD)
    return w


def favor_token(weights: dict[str, np.ndarray], token: int, margin: float = 50.0) -> None:
    """Make ``token`` the argmax at every position, in place (a real model whose logits favour it).

    Dimension 0 of the residual stream is held at a positive constant: every embedding gets
    +4 there and no layer writes to it (rows 0 of attn_output/ffn_down zeroed), so after the
    final RMSNorm it is positive; the output head reads it only for ``token``.
    """
    weights["token_embd.weight"][:, 0] = 4.0
    for name, arr in weights.items():
        if name.endswith(("attn_output.weight", "ffn_down.weight")):
            arr[0, :] = 0.0
    weights["output_norm.weight"][0] = 1.0
    out = weights["output.weight"]
    out[:, 0] = 0.0
    out[token, 0] = margin


def write_gguf(out_path: Path, cfg: TinyLlmConfig, weights: dict[str, np.ndarray],
               vocab_fields: Sequence[tuple[str, object, list]], dtype: str = "f32",
               name: str = "tiny-llama") -> None:
    """Write ``weights`` + the copied tokenizer keys as a LLaMA GGUF llama.cpp can run."""
    import gguf

    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    n_vocab = weights["token_embd.weight"].shape[0]
    wr = gguf.GGUFWriter(str(out_path), "llama")
    wr.add_name(name)
    wr.add_context_length(cfg.ctx)
    wr.add_embedding_length(cfg.dim)
    wr.add_block_count(cfg.n_layers)
    wr.add_feed_forward_length(cfg.ffn)
    wr.add_head_count(cfg.n_heads)
    wr.add_head_count_kv(cfg.n_kv_heads)
    wr.add_layer_norm_rms_eps(RMS_EPS)
    wr.add_rope_dimension_count(cfg.head_dim)
    wr.add_rope_freq_base(ROPE_FREQ_BASE)
    wr.add_vocab_size(n_vocab)
    wr.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    for key, value, types in vocab_fields:
        sub = types[-1] if types[0] == gguf.GGUFValueType.ARRAY else None
        wr.add_key_value(key, value, types[0], sub_type=sub)
    for tname, arr in weights.items():
        # 1-D norms stay f32 (llama.cpp expects it); matrices follow `dtype`.
        cast = np.float16 if dtype == "f16" and arr.ndim == 2 else np.float32
        wr.add_tensor(tname, np.ascontiguousarray(arr, dtype=cast))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def build_tiny_llm(out_path: str | Path, vocab_gguf: str | Path = DEFAULT_VOCAB_GGUF, dim: int = 64,
                   n_layers: int = 2, n_heads: int = 4, n_kv_heads: int = 4, ffn_dim: int | None = None,
                   ctx: int = 2048, seed: int = 0, dtype: str = "f32",
                   embeddings: np.ndarray | None = None, favor: int | None = None) -> Path:
    """Write a tiny seeded LLaMA GGUF with the vocabulary of ``vocab_gguf``; return its path.

    embeddings: optional (V, dim) float32 token-embedding table to use instead of random rows.
    favor: optional token id made the argmax at every position (see `favor_token`).
    """
    cfg = TinyLlmConfig(dim, n_layers, n_heads, n_kv_heads, ffn_dim, ctx)
    cfg.validate()
    fields = read_vocab_fields(vocab_gguf)
    n_vocab = len(next(v for k, v, _ in fields if k == "tokenizer.ggml.tokens"))
    weights = init_weights(cfg, n_vocab, seed, embeddings)
    if favor is not None:
        favor_token(weights, favor)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # an error or Ctrl-C never leaves a truncated GGUF under the real name
        write_gguf(tmp, cfg, weights, fields, dtype)
    return out


# ---------------------------------------------------------------- numpy reference forward

def load_weights(path: str | Path) -> tuple[TinyLlmConfig, dict[str, np.ndarray]]:
    """Read a LLaMA GGUF's hyper-parameters and tensors (dequantised to float32)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def kv(key: str):
        return reader.fields[key].contents()

    cfg = TinyLlmConfig(int(kv("llama.embedding_length")), int(kv("llama.block_count")),
                        int(kv("llama.attention.head_count")), int(kv("llama.attention.head_count_kv")),
                        int(kv("llama.feed_forward_length")), int(kv("llama.context_length")))
    weights = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        weights[t.name] = np.asarray(arr, dtype=np.float32).reshape([int(n) for n in t.shape[::-1]])
    return cfg, weights


def _rms_norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * w


def _rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Adjacent-pair ("NORM") RoPE on (T, H, hd): pairs (x[2i], x[2i+1]) rotate by pos·base^(-2i/hd)."""
    hd = x.shape[-1]
    theta = pos[:, None] * ROPE_FREQ_BASE ** (-np.arange(0, hd, 2) / hd)  # (T, hd/2)
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal GQA: q (T, H, hd), k/v (T, Hkv, hd) -> (T, H*hd)."""
    t, h, hd = q.shape
    rep = h // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
    s = np.where(np.tril(np.ones((t, t), bool))[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", p, v).reshape(t, h * hd)


def reference_logits(path_or_weights, ids: Sequence[int],
                     cfg: TinyLlmConfig | None = None) -> np.ndarray:
    """Numpy forward of a LLaMA GGUF (or ``(cfg, weights)``) over ``ids``: logits (T, V) float64.

    llama.cpp with an f32 KV cache matches this to ~1e-5; its default f16 KV cache (f16
    accumulation in attention) differs by ~1e-3 on logits of magnitude ~10.
    """
    if cfg is None:
        cfg, w = load_weights(path_or_weights)
    else:
        w = path_or_weights
    w = {k: v.astype(np.float64) for k, v in w.items()}
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.arange(len(ids), dtype=np.float64)
    hd = cfg.head_dim
    x = w["token_embd.weight"][ids]
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"])
        q = _rope((h @ w[p + "attn_q.weight"].T).reshape(len(ids), cfg.n_heads, hd), pos)
        k = _rope((h @ w[p + "attn_k.weight"].T).reshape(len(ids), cfg.n_kv_heads, hd), pos)
        v = (h @ w[p + "attn_v.weight"].T).reshape(len(ids), cfg.n_kv_heads, hd)
        x = x + _attention(q, k, v) @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T


# ---------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.tiny_llm", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output .gguf path")
    ap.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB_GGUF, help="GGUF to copy the vocabulary from")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--ffn-dim", type=int, default=None, help="default: 8/3·dim rounded up to 32")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("f32", "f16"), default="f32")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.force:
        die(f"{a.out} exists (use --force to overwrite)")
    try:
        path = build_tiny_llm(a.out, a.vocab, a.dim, a.layers, a.heads, a.kv_heads or a.heads,
                              a.ffn_dim, a.ctx, a.seed, a.dtype)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
