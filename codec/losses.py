"""Training losses of the LLM-Codec (official-llm-codec.md §5).

Reconstruction: full-band multi-resolution STFT (spectral convergence + log-magnitude L1; FFT
512/1024/2048, windows 480/960/1200, hops 120/240/300) and a multi-resolution log-mel L1.
Adversarial: least-squares GAN (MSE) + relative L1 feature matching (Encodec).
Semantic (layer 1) and consistency (layer 2) are MSE terms; see the functions.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-7


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int, window: Tensor) -> Tensor:
    """``x (B, N)`` -> magnitude ``(B, n_fft/2+1, frames)``.

    The power is floored at 1e-7 (magnitude ~3e-4, as in ParallelWaveGAN's STFT loss) so silent bins,
    e.g. the zero padding of short clips, do not dominate the log-magnitude term.
    """
    spec = torch.stft(x, n_fft, hop, win, window=window, center=True, return_complex=True)
    return (spec.real.square() + spec.imag.square()).clamp_min(EPS).sqrt()


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + L1(log |Y|, log |Ŷ|)."""

    def __init__(self, fft_sizes: Sequence[int] = (512, 1024, 2048), hops: Sequence[int] = (120, 240, 300),
                 wins: Sequence[int] = (480, 960, 1200)) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hops) == len(wins):
            raise ValueError("fft_sizes, hops and wins must have the same length")
        self.resolutions = list(zip(fft_sizes, hops, wins))
        for i, (_, _, w) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(w), persistent=False)

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """``y_hat``, ``y`` ``(B, 1, N)`` -> scalar."""
        y_hat, y = y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1, y.shape[-1])
        total = y.new_zeros(())
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window{i}")
            m_hat, m = stft_magnitude(y_hat, n_fft, hop, win, window), stft_magnitude(y, n_fft, hop, win, window)
            # Frobenius norms over the whole batch (as ParallelWaveGAN/UniAudio): a per-clip ratio
            # explodes on a near-silent target crop.
            sc = torch.linalg.vector_norm(m - m_hat) / torch.linalg.vector_norm(m)
            total = total + sc + F.l1_loss(m_hat.log(), m.log())
        return total / len(self.resolutions)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """HTK-scale triangular mel filters ``(n_mels, n_fft/2+1)``, area-normalised like Slaney."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                                     n_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up, down = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0) * (2.0 / (hi - lo))
    return fb.float()


class MelSpectrogram(nn.Module):
    """``(B, N)`` -> log10 mel power ``(B, n_mels, frames)``."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, win: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win or n_fft
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mag = stft_magnitude(x, self.n_fft, self.hop, self.win, self.window)
        return torch.log10(torch.einsum("mf,bft->bmt", self.fb, mag.square()) + 1e-5)


class MultiResolutionMelLoss(nn.Module):
    """Mean over resolutions of L1 between log-mel spectrograms (FFT 512/1024/2048, hop = FFT/4)."""

    def __init__(self, sample_rate: int = 16000, fft_sizes: Sequence[int] = (512, 1024, 2048),
                 n_mels: Sequence[int] = (40, 80, 128)) -> None:
        super().__init__()
        self.mels = nn.ModuleList(MelSpectrogram(sample_rate, n, n // 4, m) for n, m in zip(fft_sizes, n_mels))

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        y_hat, y = y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1, y.shape[-1])
        return sum(F.l1_loss(mel(y_hat), mel(y)) for mel in self.mels) / len(self.mels)


# ------------------------------------------------------------------------------------ adversarial
def discriminator_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Least-squares GAN: mean over sub-discriminators of E(1 - D(x))² + E D(G(z))²."""
    return sum(((1 - r) ** 2).mean() + (f ** 2).mean() for r, f in zip(real, fake)) / len(real)


def generator_adversarial_loss(fake: list[Tensor]) -> Tensor:
    """Least-squares GAN generator term: mean over sub-discriminators of E(1 - D(G(z)))²."""
    return sum(((1 - f) ** 2).mean() for f in fake) / len(fake)


def feature_matching_loss(real_feats: list[list[Tensor]], fake_feats: list[list[Tensor]]) -> Tensor:
    """Mean over all layers of L1(fake, real) / mean|real| (Encodec's relative feature loss)."""
    terms = [F.l1_loss(f, r.detach()) / (r.detach().abs().mean() + EPS)
             for rs, fs in zip(real_feats, fake_feats) for r, f in zip(rs, fs)]
    return sum(terms) / len(terms)


# ------------------------------------------------------------------------- semantic / consistency
def semantic_loss(zq1: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE between the time-mean of layer-1 ``zq1 (B, C, T)`` and ``target (B, C)`` over ``mask (B,)``.

    Clips without text (mask False) do not contribute; with none in the batch the loss is 0.
    """
    if not bool(mask.any()):
        return zq1.new_zeros(())
    pooled = zq1.mean(dim=-1)
    return F.mse_loss(pooled[mask], target[mask])


def consistency_loss(pred: Tensor, teacher: Tensor) -> Tensor:
    """MSE between head(layer-2 zq) ``pred (B, T, F)`` and teacher frames ``(B, T_t, F)``.

    The teacher is nearest-interpolated to ``T`` frames (official: Whisper 50 Hz -> 33.3 Hz).
    """
    target = F.interpolate(teacher.transpose(1, 2), size=pred.shape[1], mode="nearest").transpose(1, 2)
    return F.mse_loss(pred, target)



# ---------------------------------------------------------------------------------- codebook usage
def codebook_usage_loss(scores: Tensor, tau: float) -> Tensor:
    """Entropy regulariser against codebook collapse (MAGVIT-v2 / LFQ), normalised by ``log N``.

    ``scores (M, N)``: cosine scores of ``M`` queries against ``N`` codewords (the search's own matrix).
    With ``p = softmax(scores / tau)`` per query, returns ``(mean_m H(p_m) - H(mean_m p_m)) / log N``:
    low when each query is confident *and* the batch spreads over many codewords. In ``[-1, 1]``:
    ``0`` when every query is one-hot on the same codeword, ``-log(min(M, N)) / log N`` at best
    (one-hot queries, uniform batch usage).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (M, N) with N >= 2, got {tuple(scores.shape)}")
    if tau <= 0:
        raise ValueError(f"entropy temperature must be positive, got {tau}")
    logp = F.log_softmax(scores.float() / tau, dim=-1)
    p = logp.exp()
    per_query = -(p * logp).sum(-1).mean()
    avg = p.mean(0)
    batch = -(avg * avg.clamp_min(1e-12).log()).sum()
    return (per_query - batch) / math.log(scores.shape[1])
