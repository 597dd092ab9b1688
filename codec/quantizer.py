"""Multi-scale residual VQ whose codebooks are a frozen LLM's token embeddings (official-llm-codec.md §3).

Layer ``l`` (stride ``s_l`` in ``cfg.vq_strides``, default 4/2/1) average-pools the residual over
non-overlapping groups of ``s_l`` frames aligned to frame 0, picks the codeword with the highest cosine
similarity against ``normalize(cb_proj_l(codebook_l))`` (lowest index wins ties), quantises to the
*un-normalised* projected row, holds it for ``s_l`` frames (``repeat_interleave``) and subtracts it from
the residual. Layer 1 uses the word table ``E[word_ids] (W, D_llm)``, layers 2+ the whole embedding table
``E (V, D_llm)``. The tables are frozen buffers (stored once: layers 2 and 3 share ``vocab_codebook``);
only the per-layer ``cb_proj: Linear(D_llm -> latent)`` trains.

Against codebook collapse: ``cb_proj``'s bias starts at ``-W @ mean(table)``, so the projected rows start
centred (an LLM embedding table shares a common mean direction that would otherwise make every projected row
point the same way for the cosine search; it is folded into the bias, so exported tables stay plain rows).
When ``entropy_tau`` is set, ``quantize`` with grad enabled also returns the codebook-usage entropy of each
layer's soft assignment ``softmax(cos / entropy_tau)`` (``codec.losses.codebook_usage_loss``), computed from
the search's own score matrix (the table side re-projected with grad); its gradient reaches both the
queries (encoder) and ``cb_proj``.

Gain: the search is by direction only, so nothing in it ties a chosen row's length to the residual it codes.
The default codec's rows came out 3-5x too short (least-squares gain 4.7 / 3.1 / 3.5 per layer on held-out
speech), so each layer removed little of its residual and layers 2-3 re-coded layer 1's direction instead of
refining it. ``match_gains`` re-fits each layer's scale in closed form (folded into ``cb_proj``, so exported
tables stay plain rows); ``last_gains`` holds the least-squares gain of the latest quantisation per layer.

Algorithmic latency: a layer-1 code needs its whole group of ``s_1 = 4`` frames (120 ms), and groups
are independent, so codes for a group are final once its 4 latent frames exist (``quantize_groups``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.config import CodecConfig
from codec.losses import codebook_usage_loss

Tables = list[tuple[Tensor, Tensor]]


@dataclass
class VQLosses:
    """Scalar VQ losses summed over layers (each a mean over batch, channels and frames)."""

    commitment: Tensor  # mse(pooled residual, sg(q)): trains the encoder
    codebook: Tensor  # mse(q, sg(pooled residual)): trains cb_proj
    entropy: Tensor  # codebook-usage entropy (0 unless entropy_tau is set and grad is on): encoder + cb_proj


def _as_table(table: Tensor | np.ndarray, rows: int, dim: int, what: str, field: str) -> Tensor:
    table = torch.as_tensor(np.asarray(table) if not isinstance(table, Tensor) else table)
    if table.dim() != 2 or not table.is_floating_point():
        raise ValueError(f"{what} must be a float matrix (N, D), got {tuple(table.shape)} {table.dtype}")
    if table.shape[1] != dim:
        raise ValueError(f"{what} has width {table.shape[1]} but cfg.llm_dim is {dim}; "
                         f"build the config with cfg.replace(llm_dim={table.shape[1]})")
    if table.shape[0] != rows:
        raise ValueError(f"{what} has {table.shape[0]} rows but cfg.{field} is {rows}; "
                         f"build the config with cfg.replace({field}={table.shape[0]})")
    return table.detach().to(torch.float32).contiguous().clone()


def _ls_gain(q: Tensor, x: Tensor) -> Tensor:
    """The scale ``a`` minimising ``|a·q - x|²``: ``<q, x> / <q, q>`` (1 when ``q`` is all zeros)."""
    den = (q * q).sum()
    return torch.where(den > 0, (q * x).sum() / den.clamp_min(1e-30), torch.ones_like(den))


def nearest(x: Tensor, normed: Tensor) -> Tensor:
    """Cosine nearest codeword: ``x (B, T, latent)``, ``normed (N, latent)`` -> codes ``(B, T)`` int64.

    ``torch.argmax`` returns the first maximal index, so exact ties go to the lowest code.
    """
    with torch.no_grad():
        return torch.argmax(F.normalize(x, dim=-1) @ normed.T, dim=-1)


class MultiScaleRVQ(nn.Module):
    """RVQ over latents ``(B, latent, T)`` with ``T`` a multiple of ``cfg.group_frames``.

    ``word_embeddings (W, D_llm)`` and ``vocab_embeddings (V, D_llm)`` (torch or numpy, float) must match
    ``cfg.word_table_size``, ``cfg.vocab_size`` and ``cfg.llm_dim``.
    """

    def __init__(self, cfg: CodecConfig, word_embeddings: Tensor | np.ndarray,
                 vocab_embeddings: Tensor | np.ndarray) -> None:
        super().__init__()
        self.strides = cfg.vq_strides
        self.register_buffer("word_codebook", _as_table(word_embeddings, cfg.word_table_size, cfg.llm_dim,
                                                        "word_embeddings", "word_table_size"))
        self.register_buffer("vocab_codebook", _as_table(vocab_embeddings, cfg.vocab_size, cfg.llm_dim,
                                                         "vocab_embeddings", "vocab_size"))
        self.cb_proj = nn.ModuleList(nn.Linear(cfg.llm_dim, cfg.latent_dim, bias=True) for _ in self.strides)
        self.entropy_tau: float | None = None  # set by the trainer to add the usage-entropy term
        self.last_gains: list[float] = []  # least-squares gain per layer of the latest quantize() (diagnostic)
        with torch.no_grad():  # centred projected rows at init (see module docstring)
            for layer, proj in enumerate(self.cb_proj):
                proj.bias.copy_(-proj.weight @ self.codebook(layer).mean(0))

    def codebook(self, layer: int) -> Tensor:
        """The frozen table of layer ``layer`` (0-based): ``(N_l, D_llm)``."""
        return self.word_codebook if layer == 0 else self.vocab_codebook

    def projected_tables(self) -> Tables:
        """Per layer ``(rows (N_l, latent), normed (N_l, latent))``: ``cb_proj(codebook)`` and its L2-normalised rows."""
        with torch.no_grad():
            rows = [proj(self.codebook(i)) for i, proj in enumerate(self.cb_proj)]
            return [(r, F.normalize(r, dim=-1)) for r in rows]

    def quantize(self, z: Tensor, tables: Tables | None = None) -> tuple[Tensor, list[Tensor], VQLosses, list[Tensor]]:
        """``z (B, latent, T)`` -> ``(zq (B, latent, T), codes, losses, per_layer_zq)``.

        ``codes[l]`` is ``(B, T / s_l)`` int64; ``per_layer_zq[l]`` is layer ``l``'s held-up quantised latent
        ``(B, latent, T)`` (straight-through: its value is the projected row, its gradient flows to ``z``).
        ``tables`` (from ``projected_tables()``) skips re-projecting the codebooks, e.g. when streaming.
        """
        self._check_latent(z)
        tables = self.projected_tables() if tables is None else tables
        residual, zq = z, torch.zeros_like(z)
        codes: list[Tensor] = []
        per_layer: list[Tensor] = []
        commitment = codebook = entropy = z.new_zeros(())
        with_entropy = self.entropy_tau is not None and torch.is_grad_enabled()
        gains: list[Tensor] = []
        for layer, stride in enumerate(self.strides):
            x = F.avg_pool1d(residual, stride, stride) if stride > 1 else residual  # (B, latent, T/s)
            rows, normed = tables[layer]
            if with_entropy:  # the same scores as `nearest`, kept with grad to the queries and to cb_proj
                normed_g = F.normalize(self.cb_proj[layer](self.codebook(layer)), dim=-1)  # == normed, with grad
                scores = F.normalize(x.transpose(1, 2), dim=-1) @ normed_g.T  # (B, T/s, N_l)
                idx = torch.argmax(scores.detach(), dim=-1)
                entropy = entropy + codebook_usage_loss(scores.flatten(0, 1), self.entropy_tau)
            else:
                idx = nearest(x.transpose(1, 2), normed)
            q = self._lookup(layer, rows, idx)  # (B, latent, T/s)
            gains.append(_ls_gain(q.detach(), x.detach()))
            commitment = commitment + F.mse_loss(x, q.detach())
            codebook = codebook + F.mse_loss(q, x.detach())
            # Straight-through whose value is exactly q (x - sg(x) == 0), so decoding codes reproduces it.
            q_st = q.detach() + (x - x.detach())
            held = q_st.repeat_interleave(stride, dim=-1) if stride > 1 else q_st
            zq, residual = zq + held, residual - held
            codes.append(idx)
            per_layer.append(held)
        if torch.is_grad_enabled():
            self.last_gains = [float(g) for g in gains]
        return zq, codes, VQLosses(commitment, codebook, entropy), per_layer

    @torch.no_grad()
    def match_gains(self, z: Tensor, limit: float = 8.0) -> list[float]:
        """Rescale each layer's ``cb_proj`` so its chosen rows have the least-squares gain on ``z (B, latent, T)``.

        Layer by layer, since a layer's residual depends on the rescaled layers before it; codes of a layer
        never change by its own rescale (the search is by direction). Returns the factors applied, each
        clipped to ``[1/limit, limit]``.
        """
        self._check_latent(z)
        residual, factors = z.float(), []
        for layer, stride in enumerate(self.strides):
            x = F.avg_pool1d(residual, stride, stride) if stride > 1 else residual
            rows = self.cb_proj[layer](self.codebook(layer))
            q = rows[nearest(x.transpose(1, 2), F.normalize(rows, dim=-1))].transpose(1, 2)
            factor = min(max(float(_ls_gain(q, x)), 1.0 / limit), limit)
            self.cb_proj[layer].weight.mul_(factor)
            self.cb_proj[layer].bias.mul_(factor)
            held = factor * q
            residual = residual - (held.repeat_interleave(stride, dim=-1) if stride > 1 else held)
            factors.append(factor)
        return factors

    def quantize_groups(self, z: Tensor, tables: Tables | None = None) -> tuple[Tensor, list[Tensor]]:
        """Streaming helper: quantise complete groups ``z (B, latent, g·group)`` -> ``(zq, codes)`` without grad.

        Groups are independent, so quantising each completed group as it arrives gives the offline codes.
        """
        with torch.no_grad():
            zq, codes, _, _ = self.quantize(z, tables)
        return zq, codes

    def from_codes(self, codes: list[Tensor], tables: Tables | None = None) -> Tensor:
        """``codes`` (``(B, T/s_l)`` per layer) -> summed quantised latents ``(B, latent, T)``."""
        if len(codes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} code layers, got {len(codes)}")
        lengths = {int(c.shape[-1]) * s for c, s in zip(codes, self.strides)}
        if len(lengths) != 1 or any(c.dim() != 2 for c in codes):
            shapes = [tuple(c.shape) for c in codes]
            raise ValueError(f"code layers {shapes} do not describe one (B, T) signal with strides {self.strides}")
        tables = self.projected_tables() if tables is None else tables
        zq = None
        for layer, (c, stride) in enumerate(zip(codes, self.strides)):
            size = tables[layer][0].shape[0]
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= size):
                raise ValueError(f"layer-{layer + 1} codes must lie in [0, {size}), got [{int(c.min())}, {int(c.max())}]")
            q = tables[layer][0][c.long()].transpose(1, 2)
            q = q.repeat_interleave(stride, dim=-1) if stride > 1 else q
            zq = q if zq is None else zq + q
        return zq

    def _lookup(self, layer: int, rows: Tensor, idx: Tensor) -> Tensor:
        """Projected rows for ``idx (B, T')`` -> ``(B, latent, T')``, with a gradient to ``cb_proj`` when training.

        The value is always the row of the full projected table (what export ships); the gradient comes from
        re-projecting only the chosen codebook rows, which avoids back-propagating through all N rows.
        """
        q = rows[idx]
        proj = self.cb_proj[layer]
        if torch.is_grad_enabled() and proj.weight.requires_grad:
            q_grad = proj(self.codebook(layer)[idx])
            q = q + (q_grad - q_grad.detach())
        return q.transpose(1, 2)

    def _check_latent(self, z: Tensor) -> None:
        group = self.strides[0]
        if z.dim() != 3 or z.shape[1] != self.cb_proj[0].out_features:
            raise ValueError(f"quantizer expects latents (B, {self.cb_proj[0].out_features}, T), got {tuple(z.shape)}")
        if z.shape[-1] == 0 or z.shape[-1] % group:
            raise ValueError(f"latent length {z.shape[-1]} is not a positive multiple of the group ({group} frames); "
                             "pad the audio to a multiple of group_frames * hop samples (LLMCodec.pad_audio)")
