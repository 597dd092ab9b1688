"""Causal SEANet/SNAC decoder: ``(B, latent, T) -> (B, 1, T·hop)``.

Mirrors the official tree (official-llm-codec.md §1.2) without the NoiseBlock (no randomness at
inference): depthwise conv k7 + 1x1 conv to ``decoder_dim`` (one k7 conv when not depthwise) ->
optional causal local attention -> DecoderBlocks (Snake, causal transposed conv k=2s, 3 dilated
residual units) halving the channels -> Snake -> conv k7 to one channel -> tanh. With
``cfg.decoder_head == "istft"`` only the first ``cfg.head_blocks`` DecoderBlocks run, then an inverse-STFT
head (``codec.modules.istft``) makes the samples -> tanh; ``"harmonic"`` adds an oscillator bank driven by a
predicted F0 to that head (``codec.modules.harmonic``).

Algorithmic latency: output sample ``n`` depends on latent frames ``<= n // hop`` only, so the decoder
adds none beyond the frame itself: a chunk of ``k`` frames yields its ``k·hop`` samples immediately.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from codec.config import CodecConfig
from codec.modules.attention import CausalLocalAttention
from codec.modules.conv import CausalConv1d, CausalConvTranspose1d, fold_weight_norm
from codec.modules.harmonic import HarmonicHead
from codec.modules.istft import ISTFTHead
from codec.modules.residual import ResidualUnit
from codec.modules.snake import Snake1d
from codec.modules.streaming import StreamingModule, StreamingSequential, tracing


class Tanh(StreamingModule):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


class DecoderBlock(StreamingSequential):
    """``(B, C_in, L) -> (B, C_out, L·stride)``: Snake, transposed conv (k = 2·stride), res1..3."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, dilations: tuple[int, ...],
                 kernel_size: int, depthwise: bool) -> None:
        groups = out_dim if depthwise else 1
        layers: OrderedDict[str, StreamingModule] = OrderedDict()
        layers["snake"] = Snake1d(in_dim)
        layers["up"] = CausalConvTranspose1d(in_dim, out_dim, stride)
        for i, d in enumerate(dilations):
            layers[f"res{i + 1}"] = ResidualUnit(out_dim, d, kernel_size, groups)
        super().__init__(layers)


class Decoder(StreamingSequential):
    """Causal decoder. ``forward``: ``(B, latent, T) -> (B, 1, T·hop)`` in ``[-1, 1]``.

    ``step(latent (B, latent, k), *state) -> (audio (B, 1, k·hop), *new_state)`` for any ``k >= 1``.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        latent, dim = cfg.latent_dim, cfg.decoder_dim
        layers: OrderedDict[str, StreamingModule] = OrderedDict()
        if cfg.depthwise:
            layers["conv_in"] = CausalConv1d(latent, latent, cfg.kernel_size, groups=latent)
            layers["proj"] = CausalConv1d(latent, dim, 1)
        else:
            layers["conv_in"] = CausalConv1d(latent, dim, cfg.kernel_size)
        if cfg.attn_window:
            layers["attn"] = CausalLocalAttention(dim, cfg.attn_window, cfg.attn_dim_head)
        blocks = cfg.decoder_rates if cfg.decoder_head == "conv" else cfg.decoder_rates[:cfg.head_blocks]
        for i, stride in enumerate(blocks):
            if dim % 2:
                raise ValueError(f"decoder_dim {cfg.decoder_dim} cannot be halved {len(cfg.decoder_rates)} times")
            layers[f"block{i + 1}"] = DecoderBlock(dim, dim // 2, stride, cfg.dilations, cfg.kernel_size,
                                                   cfg.depthwise)
            dim //= 2
        if cfg.decoder_head == "istft":
            layers["head"] = ISTFTHead(dim, cfg.head_dim, cfg.head_hop, cfg.dilations, cfg.kernel_size,
                                       cfg.depthwise, cfg.head_overlap)
        elif cfg.decoder_head == "harmonic":
            layers["head"] = HarmonicHead(dim, cfg.head_dim, cfg.head_hop, cfg.dilations, cfg.kernel_size,
                                          cfg.depthwise, cfg.harmonics, cfg.sample_rate, cfg.head_overlap)
        else:
            layers["snake"] = Snake1d(dim)
            layers["conv_out"] = CausalConv1d(dim, 1, cfg.kernel_size)
        layers["tanh"] = Tanh()
        super().__init__(layers)
        self.latent_dim = latent

    def forward(self, z: Tensor) -> Tensor:
        self._check(z)
        return super().forward(z)

    def forward_with_pitch(self, z: Tensor, f0_hz: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``z (B, latent, T)`` -> ``(audio (B, 1, T·hop), pitch (B, L, 2) | None)``: a harmonic head's predicted
        log(F0 / 100 Hz) and voicing logit per head frame (``L = T·hop / head_hop``), None for other heads.
        ``f0_hz (B, L)``, where positive, drives the harmonic head's oscillators instead (teacher forcing)."""
        self._check(z)
        pitch = None
        x = z
        for name, module in self.named_children():
            if isinstance(module, HarmonicHead):
                x, pitch = module.forward_with_pitch(x, f0_hz)
            else:
                x = module(x)
        return x, pitch

    def step(self, z: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        self._check(z)
        return super().step(z, *state)

    def fold_weight_norm(self) -> int:
        return fold_weight_norm(self)

    def _check(self, z: Tensor) -> None:
        if tracing():
            return
        if z.dim() != 3 or z.shape[1] != self.latent_dim or z.shape[-1] < 1:
            raise ValueError(f"decoder expects latents of shape (B, {self.latent_dim}, T>=1), got {tuple(z.shape)}")
