"""Codec configuration: one frozen dataclass, saved as ``config.json`` beside ``model.safetensors``."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


DECODER_HEADS = ("conv", "istft", "harmonic")


@dataclass(frozen=True)
class CodecConfig:
    """Hyper-parameters of the causal LLM-Codec.

    Rates multiply to the hop (480 samples = 30 ms at 16 kHz). ``vq_strides`` are the average-pool
    factors of the three residual VQ layers (4, 2, 1 -> 8.33 + 16.67 + 33.33 = 58.33 tokens/s).
    ``llm_dim``, ``vocab_size`` and ``word_table_size`` describe the frozen LLM codebooks and are
    filled from the GGUF when training starts: ``word_table_size`` entries in layer 1 (whole words),
    ``vocab_size`` entries in layers 2+ (the residual token table, ``codec.vocab.build_residual_table``:
    the whole vocabulary up to 32,000 ids, a 32,000-id subset of larger ones).
    """

    sample_rate: int = 16000
    encoder_dim: int = 32
    encoder_rates: tuple[int, ...] = (3, 4, 5, 8)
    latent_dim: int = 512
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3)
    vq_strides: tuple[int, ...] = (4, 2, 1)
    llm_dim: int = 4096
    vocab_size: int = 32000
    word_table_size: int = 3000
    kernel_size: int = 7
    dilations: tuple[int, ...] = (1, 3, 9)
    depthwise: bool = True
    attn_window: int = 8
    attn_dim_head: int = 64
    preset: str = "paper"
    # Decoder output: "conv" (transposed-conv stages down to the sample rate), "istft" (the first
    # ``head_blocks`` decoder stages, then a Vocos-style inverse-STFT head of width ``head_dim``,
    # codec.modules.istft). Configs saved before these fields existed load as "conv".
    decoder_head: str = "conv"
    head_blocks: int = 1
    head_dim: int = 256
    # decoder_head "harmonic": the "istft" head plus an oscillator bank of this many harmonics of a predicted
    # F0 (codec.modules.harmonic).
    harmonics: int = 64
    # iSTFT window of the "istft"/"harmonic" heads in head frames: n_fft = head_overlap * head_hop (4: 240
    # samples, 66.7 Hz bins, too coarse to resolve the harmonics of speech; 16: 960 samples, 16.7 Hz bins).
    # The window never reads ahead (frame j writes samples [j*hop, j*hop + n_fft)), so it adds no latency.
    head_overlap: int = 4

    def __post_init__(self) -> None:
        for name in ("encoder_rates", "decoder_rates", "vq_strides", "dilations"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if _prod(self.encoder_rates) != _prod(self.decoder_rates):
            raise ValueError(f"encoder rates {self.encoder_rates} and decoder rates {self.decoder_rates} differ in hop")
        if self.vq_strides[-1] != 1 or any(self.vq_strides[0] % s for s in self.vq_strides):
            raise ValueError(f"vq_strides {self.vq_strides} must divide the first and end with 1")
        if self.decoder_head not in DECODER_HEADS:
            raise ValueError(f"decoder_head must be one of {DECODER_HEADS}, got {self.decoder_head!r}")
        if self.head_overlap < 1:
            raise ValueError(f"head_overlap must be >= 1, got {self.head_overlap}")
        if self.harmonics < 1:
            raise ValueError(f"harmonics must be >= 1, got {self.harmonics}")
        if self.decoder_head != "conv" and not 0 <= self.head_blocks < len(self.decoder_rates):
            raise ValueError(f"head_blocks {self.head_blocks} must lie in [0, {len(self.decoder_rates)}) "
                             f"for decoder rates {self.decoder_rates}")

    @property
    def head_hop(self) -> int:
        """Output samples per frame of the inverse-STFT head (60 for the default rates, head_blocks 1)."""
        return _prod(self.decoder_rates[self.head_blocks:])

    @property
    def head_fft(self) -> int:
        """Window length in samples of the inverse-STFT head (240 for the defaults)."""
        return self.head_overlap * self.head_hop

    @property
    def hop(self) -> int:
        """Samples per latent frame (480 for all presets)."""
        return _prod(self.encoder_rates)

    @property
    def group_frames(self) -> int:
        """Latent frames per layer-1 code (the streaming group, 4)."""
        return self.vq_strides[0]

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def tokens_per_second(self) -> float:
        """Codec tokens per second over all layers (58.33 for 16 kHz, hop 480, strides 4/2/1)."""
        return sum(self.frame_rate / s for s in self.vq_strides)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Entries per VQ layer: the word table for layer 1, the residual token table after."""
        return (self.word_table_size,) + (self.vocab_size,) * (len(self.vq_strides) - 1)

    def replace(self, **changes: Any) -> "CodecConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CodecConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CodecConfig fields: {unknown}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "CodecConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _prod(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


PRESETS: dict[str, CodecConfig] = {
    # The released UniAudio 1.5 generator config (official-llm-codec.md §1), made causal.
    "paper": CodecConfig(),
    # A few million trainable parameters: trains at useful speed on a 2-core CPU.
    "small": CodecConfig(encoder_dim=16, latent_dim=128, decoder_dim=256, attn_window=8,
                         attn_dim_head=32, preset="small"),
    # Unit tests only.
    "tiny": CodecConfig(encoder_dim=4, latent_dim=16, decoder_dim=32, attn_window=4,
                        attn_dim_head=8, llm_dim=64, preset="tiny"),
}


def preset(name: str, **overrides: Any) -> CodecConfig:
    """A named preset with field overrides (``preset("small", latent_dim=96)``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
