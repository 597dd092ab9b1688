"""Causal local multi-head attention over latent frames with a fixed-size KV cache.

Frame ``t`` attends to frames ``t-W+1 .. t`` (``W = attn_window``; fewer at the stream start). The
official LLM-Codec attends bidirectionally inside fixed 8-frame blocks (official-llm-codec.md §6.2),
which needs up to 7 frames of look-ahead; the sliding causal window needs none.

Rotary position embedding (GPT-NeoX rotate-half, base 10000) is applied in its relative form: the query
stays unrotated and the key at window offset ``j`` is rotated by ``j - (W-1)`` (``<= 0``). Because
``R(p)ᵀR(p') = R(p'-p)`` this is exactly RoPE, but the angles stay small and the offline pass, any
streaming chunking and the exported graph perform the identical computation, with no absolute position
counter in the state.

Offline and streaming share one routine: keys/values are laid out as a buffer of ``W-1`` history
frames followed by the ``L`` new frames (zeros + ``valid = 0`` history offline), and each new frame
sees its ``W`` slots via ``W`` static slices. Streaming state: ``k``, ``v (B, H, W-1, D_head)`` (keys
un-rotated) and ``valid (B, W-1)`` (1.0 for slots holding a real frame).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.modules.streaming import StreamingModule


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class CausalLocalAttention(StreamingModule):
    """Pre-norm (LayerNorm over channels) local attention with a residual: ``(B, C, T) -> (B, C, T)``.

    ``heads = C / dim_head``; ``window >= 2`` frames including the current one.
    """

    def __init__(self, dim: int, window: int, dim_head: int) -> None:
        super().__init__()
        if window < 2:
            raise ValueError(f"attention window must be >= 2 frames (0 disables attention), got {window}")
        if dim % dim_head or dim_head % 2:
            raise ValueError(f"attention dim {dim} must be a multiple of an even head dim {dim_head}")
        self.dim, self.window, self.dim_head, self.heads = dim, window, dim_head, dim // dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, dim_head, 2, dtype=torch.float64) / dim_head)
        offsets = torch.arange(-(window - 1), 1, dtype=torch.float64)
        angles = offsets[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)  # (W, D_head), frequencies duplicated (rotate-half)
        # Derived constants, rebuilt on construction: not part of the checkpoint.
        self.register_buffer("rope_cos", angles.cos().float(), persistent=False)
        self.register_buffer("rope_sin", angles.sin().float(), persistent=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, C, L)`` -> q, k, v each ``(B, H, L, D_head)``."""
        batch, _, length = x.shape
        qkv = self.to_qkv(self.norm(x.transpose(1, 2)))
        qkv = qkv.reshape(batch, length, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, x: Tensor, q: Tensor, k_buf: Tensor, v_buf: Tensor, valid_buf: Tensor) -> Tensor:
        """q ``(B, H, L, Dh)``; k/v buffers ``(B, H, W-1+L, Dh)``; valid ``(B, W-1+L)`` -> ``(B, C, L)``."""
        batch, _, length = x.shape
        slots = range(self.window)
        k_win = torch.stack([k_buf[:, :, j:j + length] for j in slots], dim=3)  # (B, H, L, W, Dh)
        v_win = torch.stack([v_buf[:, :, j:j + length] for j in slots], dim=3)
        ok = torch.stack([valid_buf[:, j:j + length] for j in slots], dim=-1) > 0.5  # (B, L, W)
        k_win = k_win * self.rope_cos + _rotate_half(k_win) * self.rope_sin
        scores = torch.matmul(q.unsqueeze(3), k_win.transpose(-1, -2)).squeeze(3)  # (B, H, L, W)
        scores = scores * (1.0 / math.sqrt(self.dim_head))
        # The current frame's slot is always valid, so no row is fully masked.
        scores = torch.where(ok.unsqueeze(1), scores, torch.full_like(scores, torch.finfo(scores.dtype).min))
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs.unsqueeze(3), v_win).squeeze(3)  # (B, H, L, Dh)
        out = out.permute(0, 2, 1, 3).reshape(batch, length, self.dim)
        return x + self.to_out(out).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        hist = self.window - 1
        k_buf = F.pad(k, (0, 0, hist, 0))
        v_buf = F.pad(v, (0, 0, hist, 0))
        valid = F.pad(torch.ones_like(x[:, 0, :]), (hist, 0))
        return self._attend(x, q, k_buf, v_buf, valid)

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        device, dtype = self._param_device_dtype()
        kv = torch.zeros(batch, self.heads, self.window - 1, self.dim_head, device=device, dtype=dtype)
        return kv, kv.clone(), torch.zeros(batch, self.window - 1, device=device, dtype=dtype)

    def state_names(self) -> list[str]:
        return ["k", "v", "valid"]

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        k_cache, v_cache, valid = state
        length = x.shape[-1]
        q, k, v = self._qkv(x)
        k_buf = torch.cat([k_cache, k], dim=2)
        v_buf = torch.cat([v_cache, v], dim=2)
        valid_buf = torch.cat([valid, torch.ones_like(x[:, 0, :])], dim=1)
        y = self._attend(x, q, k_buf, v_buf, valid_buf)
        return y, k_buf[:, :, length:], v_buf[:, :, length:], valid_buf[:, length:]
