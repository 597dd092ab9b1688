"""The causal LLM-Codec: encoder -> multi-scale LLM-codebook RVQ -> decoder.

Numbers for the default config: 16 kHz, hop 480 (30 ms), latent 33⅓ Hz, codes per 4-frame group (120 ms):
1 + 2 + 4 = 7 -> 58⅓ tokens/s.

Algorithmic latency: one hop (30 ms) for the causal conv stack, and a group's codes exist once its
4 frames (120 ms) have arrived; the decoder adds nothing beyond the frame it is given.

Offline length rule: ``encode``/``forward`` right-pad the *audio* with zeros to a multiple of
``group_frames · hop`` samples (1920 = 120 ms), so ``N`` samples give ``ceil(N / 1920)`` groups; ``forward``
trims the decoded audio back to ``N``. The streaming path (``EncodeStream``) emits codes for completed groups
only; after ``flush()`` (the same zero padding) its codes equal ``encode`` on the same audio. The bare encoder
gives ``floor(N / hop)`` frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.config import CodecConfig
from codec.modules import Decoder, Encoder, fold_weight_norm
from codec.quantizer import MultiScaleRVQ, Tables, VQLosses


@dataclass
class CodecOutput:
    """Everything a training step needs from one forward pass."""

    audio: Tensor  # (B, 1, N) reconstruction, trimmed to the input length
    codes: list[Tensor]  # per layer (B, T / s_l) int64
    z: Tensor  # (B, latent, T) encoder output (T = padded N / hop)
    zq: Tensor  # (B, latent, T) summed quantised latents (straight-through)
    per_layer_zq: list[Tensor]  # per layer (B, latent, T): [0] for the semantic loss, [1] for consistency
    vq_losses: VQLosses
    pitch: Tensor | None = None  # (B, L, 2) a harmonic head's log(F0/100 Hz) and voicing logit per head frame
    pitch_hop: int = 0  # samples per frame of ``pitch``
    pitch_target: tuple[Tensor, Tensor] | None = None  # YIN (F0, voiced) at ``pitch_hop`` when a step computed it


class LLMCodec(nn.Module):
    """``LLMCodec(cfg, word_embeddings (W, D_llm), vocab_embeddings (V, D_llm))``.

    ``.encoder`` ``(B, 1, N) -> (B, latent, N/hop)``, ``.quantizer``, ``.decoder`` ``(B, latent, T) -> (B, 1, T·hop)``.
    """

    def __init__(self, cfg: CodecConfig, word_embeddings: Tensor | np.ndarray,
                 vocab_embeddings: Tensor | np.ndarray) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = MultiScaleRVQ(cfg, word_embeddings, vocab_embeddings)
        self.decoder = Decoder(cfg)

    @property
    def group_samples(self) -> int:
        """Audio samples per code group (4 frames x 480 = 1920)."""
        return self.cfg.group_frames * self.cfg.hop

    def pad_audio(self, wav: Tensor) -> Tensor:
        """Right-pad ``(B, 1, N)`` with zeros to a whole number of groups."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected mono audio (B, 1, N), got {tuple(wav.shape)}; "
                             "downmix stereo and add the channel axis with wav[:, None]")
        if wav.shape[-1] == 0:
            raise ValueError("empty audio: need at least one sample")
        return F.pad(wav, (0, -wav.shape[-1] % self.group_samples))

    def forward(self, wav: Tensor, f0_hz: Tensor | None = None) -> CodecOutput:
        """``wav (B, 1, N)`` in [-1, 1] at ``cfg.sample_rate`` -> :class:`CodecOutput`.

        ``f0_hz (B, L)`` (L = padded N / ``cfg.head_hop``), where positive, drives a harmonic head's
        oscillators instead of its predicted F0 (teacher forcing; ignored by other heads)."""
        n = wav.shape[-1]
        z = self.encoder(self.pad_audio(wav))
        # Under a bf16 autocast (codec.train --bf16) the convolutions run in bf16, but the cosine search,
        # the VQ losses and the returned audio stay float32: bf16 would flip near-tie codes and the STFT
        # losses need float32.
        with torch.autocast(z.device.type, enabled=False):
            zq, codes, losses, per_layer = self.quantizer.quantize(z.float())
        audio, pitch = self.decoder.forward_with_pitch(zq, f0_hz)
        return CodecOutput(audio[..., :n].float(), codes, z.float(), zq, per_layer, losses, pitch, self.cfg.head_hop)

    def encode(self, wav: Tensor) -> list[Tensor]:
        """``wav (B, 1, N)`` -> codes ``[(B, G), (B, 2G), (B, 4G)]`` with ``G = ceil(N / group_samples)``."""
        with torch.no_grad():
            return self.quantizer.quantize_groups(self.encoder(self.pad_audio(wav)))[1]

    def decode(self, codes: list[Tensor]) -> Tensor:
        """Codes -> audio ``(B, 1, T·hop)`` (not trimmed: a whole number of groups)."""
        with torch.no_grad():
            return self.decoder(self.quantizer.from_codes(codes))

    def fold_weight_norm(self) -> int:
        """Fold all weight-norm parametrizations into plain weights (before export); returns the count."""
        return fold_weight_norm(self)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: encoder, decoder, cb_proj, trainable (all parameters) and frozen (codebook buffers)."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "encoder": count(self.encoder),
            "decoder": count(self.decoder),
            "cb_proj": count(self.quantizer.cb_proj),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "frozen": sum(b.numel() for b in (self.quantizer.word_codebook, self.quantizer.vocab_codebook)),
        }

    def encode_stream(self, batch: int = 1) -> "EncodeStream":
        return EncodeStream(self, batch)

    def decode_stream(self, batch: int = 1) -> "DecodeStream":
        return DecodeStream(self, batch)


class EncodeStream:
    """Torch reference of the streaming encoder: audio in any sizes -> codes of completed groups.

    Steps the encoder one hop at a time on whole hops, buffers latent frames and quantises each group once
    its ``group_frames`` frames exist. The golden reference for the ONNX/numpy runtime.
    """

    def __init__(self, model: LLMCodec, batch: int = 1) -> None:
        self.model, self.batch = model, batch
        self.tables: Tables = model.quantizer.projected_tables()
        self.state = model.encoder.init_state(batch)
        device = model.quantizer.word_codebook.device
        self.samples = torch.zeros(batch, 1, 0, device=device)
        self.frames = torch.zeros(batch, model.cfg.latent_dim, 0, device=device)

    def push(self, audio: Tensor) -> list[list[Tensor]]:
        """``audio (B, 1, n)`` -> list over newly completed groups of codes ``[(B, 1), (B, 2), (B, 4)]``."""
        hop, group = self.model.cfg.hop, self.model.cfg.group_frames
        self.samples = torch.cat([self.samples, audio.to(self.samples.dtype)], dim=-1)
        whole = self.samples.shape[-1] // hop * hop
        if whole:
            with torch.no_grad():
                latent, *self.state = self.model.encoder.step(self.samples[..., :whole], *self.state)
            self.samples = self.samples[..., whole:]
            self.frames = torch.cat([self.frames, latent], dim=-1)
        out = []
        while self.frames.shape[-1] >= group:
            out.append(self.model.quantizer.quantize_groups(self.frames[..., :group], self.tables)[1])
            self.frames = self.frames[..., group:]
        return out

    def flush(self) -> list[list[Tensor]]:
        """Zero-pad to the end of the current group (as ``LLMCodec.encode`` does) and emit it."""
        pending = self.samples.shape[-1] + self.frames.shape[-1] * self.model.cfg.hop
        pad = -pending % self.model.group_samples
        return self.push(self.samples.new_zeros(self.batch, 1, pad)) if pad else []


class DecodeStream:
    """Torch reference of the streaming decoder: codes of whole groups -> audio ``(B, 1, group_samples)`` each."""

    def __init__(self, model: LLMCodec, batch: int = 1) -> None:
        self.model = model
        self.tables: Tables = model.quantizer.projected_tables()
        self.state = model.decoder.init_state(batch)

    def push(self, codes: list[Tensor]) -> Tensor:
        with torch.no_grad():
            zq = self.model.quantizer.from_codes(codes, self.tables)
            audio, *self.state = self.model.decoder.step(zq, *self.state)
        return audio
