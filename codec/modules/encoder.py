"""Causal SEANet/SNAC encoder: ``(B, 1, N) -> (B, latent, N/hop)``.

Mirrors the official tree (official-llm-codec.md §1.2) with left-only padding: edge conv k7 ->
EncoderBlocks (3 dilated residual units, Snake, strided conv k=2s) doubling the channels -> optional
causal local attention -> conv k7 to ``latent_dim`` (depthwise when the channel count already equals
``latent_dim``, as in the paper config).

Algorithmic latency: latent frame ``t`` depends on samples ``<= (t+1)·hop - 1`` only, i.e. one hop
(480 samples = 30 ms): a frame is available as soon as its own hop has arrived.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor

from codec.config import CodecConfig
from codec.modules.attention import CausalLocalAttention
from codec.modules.conv import CausalConv1d, fold_weight_norm
from codec.modules.residual import ResidualUnit
from codec.modules.snake import Snake1d
from codec.modules.streaming import StreamingModule, StreamingSequential, tracing


class EncoderBlock(StreamingSequential):
    """``(B, C_in, L) -> (B, C_out, L/stride)``: res1..3 (dilations), Snake, strided conv (k = 2·stride)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, dilations: tuple[int, ...],
                 kernel_size: int, depthwise: bool) -> None:
        groups = in_dim if depthwise else 1
        layers: OrderedDict[str, StreamingModule] = OrderedDict(
            (f"res{i + 1}", ResidualUnit(in_dim, d, kernel_size, groups)) for i, d in enumerate(dilations))
        layers["snake"] = Snake1d(in_dim)
        layers["conv"] = CausalConv1d(in_dim, out_dim, 2 * stride, stride=stride)
        super().__init__(layers)


class Encoder(StreamingSequential):
    """Causal encoder. ``forward``: ``(B, 1, N) -> (B, latent, floor(N/hop))``.

    ``step(audio (B, 1, k·hop), *state) -> (latent (B, latent, k), *new_state)`` for any ``k >= 1``;
    state names look like ``block2.res1.conv.prev`` or ``attn.k``.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        dim = cfg.encoder_dim
        layers: OrderedDict[str, StreamingModule] = OrderedDict()
        layers["conv_in"] = CausalConv1d(1, dim, cfg.kernel_size)
        for i, stride in enumerate(cfg.encoder_rates):
            layers[f"block{i + 1}"] = EncoderBlock(dim, 2 * dim, stride, cfg.dilations, cfg.kernel_size,
                                                   cfg.depthwise)
            dim *= 2
        if cfg.attn_window:
            layers["attn"] = CausalLocalAttention(dim, cfg.attn_window, cfg.attn_dim_head)
        groups = dim if cfg.depthwise and dim == cfg.latent_dim else 1
        layers["conv_out"] = CausalConv1d(dim, cfg.latent_dim, cfg.kernel_size, groups=groups)
        super().__init__(layers)
        self.hop = cfg.hop
        self.latent_dim = cfg.latent_dim

    def forward(self, x: Tensor) -> Tensor:
        _check_audio(x, self.hop, chunk=False)
        return super().forward(x)

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        _check_audio(x, self.hop, chunk=True)
        return super().step(x, *state)

    def fold_weight_norm(self) -> int:
        return fold_weight_norm(self)


def _check_audio(x: Tensor, hop: int, chunk: bool) -> None:
    if tracing():
        return
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"encoder expects mono audio of shape (B, 1, N), got {tuple(x.shape)}; "
                         "downmix stereo and add the channel axis with x[:, None]")
    if x.shape[-1] < hop:
        raise ValueError(f"audio of {x.shape[-1]} samples is shorter than one hop ({hop} samples)")
    if chunk and x.shape[-1] % hop:
        raise ValueError(f"streaming chunk of {x.shape[-1]} samples is not a whole number of hops ({hop})")
