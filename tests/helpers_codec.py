"""Builders for small seeded codec models shared by the codec tests."""
from __future__ import annotations

import torch

from codec.config import CodecConfig, preset
from codec.model import LLMCodec

WORDS, VOCAB, LLM_DIM = 50, 300, 64


def tiny_config(**overrides) -> CodecConfig:
    """The ``tiny`` preset with a small random 'LLM' (W=50 words, V=300 tokens, D=64)."""
    return preset("tiny", word_table_size=WORDS, vocab_size=VOCAB, llm_dim=LLM_DIM, **overrides)


def random_tables(cfg: CodecConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[word_ids] (W, D), E (V, D))`` from a seeded Gaussian embedding table."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(cfg.vocab_size, cfg.llm_dim, generator=gen)
    word_ids = torch.randperm(cfg.vocab_size, generator=gen)[: cfg.word_table_size]
    return table[word_ids], table


def randomize_snake(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every Snake a non-trivial per-channel alpha in [0.3, 3] (the init is all ones)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(0.3 + 2.7 * torch.rand(p.shape, generator=gen))


def make_codec(seed: int = 0, snake_alpha: str = "random", **overrides) -> LLMCodec:
    """A seeded tiny codec in eval mode; ``snake_alpha`` is ``"random"`` or ``"ones"``."""
    cfg = tiny_config(**overrides)
    torch.manual_seed(seed)
    model = LLMCodec(cfg, *random_tables(cfg, seed))
    if snake_alpha == "random":
        randomize_snake(model, seed + 1)
    if cfg.decoder_head == "harmonic":
        audible_harmonics(model, seed + 2)
    return model.eval()


def audible_harmonics(model: LLMCodec, seed: int = 2) -> None:
    """Make a harmonic head's oscillators audible (the init keeps them at -46 dB): harmonics near -10 dB
    and an F0 that varies smoothly around 150 Hz, like a trained head's, so tests see the oscillator bank."""
    gen = torch.Generator().manual_seed(seed)
    from codec.modules.harmonic import PARAM_GAIN

    conv = model.decoder.head.harmonic.conv
    with torch.no_grad():
        conv.weight.copy_(0.02 / PARAM_GAIN * torch.randn(conv.weight.shape, generator=gen))
        conv.bias[2:] = -2.5 / PARAM_GAIN


def sample_audio(seconds: float, batch: int = 1, seed: int = 0, sample_rate: int = 16000) -> torch.Tensor:
    """Band-limited noise plus a chirp, ``(B, 1, N)`` in [-0.5, 0.5]: deterministic and non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * sample_rate))
    t = torch.arange(n) / sample_rate
    chirp = 0.3 * torch.sin(2 * torch.pi * (100 + 400 * t) * t)
    noise = torch.randn(batch, 1, n, generator=gen)
    noise = torch.nn.functional.avg_pool1d(noise, 5, 1, 2)  # soften the top of the band
    return (chirp + 0.2 * noise).clamp(-0.5, 0.5)
