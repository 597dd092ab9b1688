"""A harmonic-plus-noise output head: ``(B, C, L) -> (B, 1, L·hop)``, the inverse-STFT head plus an oscillator bank.

Why (issue 9, ``benchmarks.pitch_probe``): with the inverse-STFT head alone, only 2-9 % of the input's voiced
frames came out voiced; the output was noise shaped by the spectral envelope, because a frame-wise magnitude and
phase must be learnt to line up across frames before any harmonic appears, which this project's CPU budget
never reached. Here the periodic part is built in (DDSP, Engel et al. 2020; harmonic-plus-noise, Stylianou
1996): a 1x1 conv on the head's backbone predicts per frame an F0, a voicing logit and ``K`` harmonic
log-amplitudes; an additive synthesiser sums ``K`` sines at ``k·F0`` sample by sample, and the inverse-STFT
branch (the same layers and names as ``ISTFTHead``, so its weights warm-start) keeps the aperiodic rest.

The F0 reaches the oscillators detached: phase gradients through a running sum of F0 are known to be useless
(DDSP), so F0 and voicing learn from the pitch loss on ``forward_with_pitch``'s prediction instead
(``codec.pitch.pitch_loss`` at the head's hop), and during training a YIN F0 may stand in for the predicted
one (teacher forcing, ``f0_hz``).

Causality: frame ``j``'s parameters reach sample ``n`` in ``[j·hop, (j+1)·hop)`` by linear interpolation from
frame ``j - 1``'s (state ``prev``), ending exactly at frame ``j``'s values; the fundamental's phase is a
running sum (state ``phase``, wrapped to ``[0, 2π)``, summed in float64 so that a long offline clip and its
streamed chunks agree).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from codec.modules.conv import CausalConv1d
from codec.modules.istft import InverseDFT, PolarToCartesian
from codec.modules.residual import ResidualUnit
from codec.modules.snake import Snake1d
from codec.modules.streaming import StreamingModule

F0_REF = 100.0  # the F0 output is log(F0 / 100 Hz), like codec.pitch's targets
F0_MIN, F0_MAX = 50.0, 500.0
MAX_LOG_AMPLITUDE = 0.0  # one harmonic's peak is at most 1 (full scale)
# Harmonics fade out linearly between these fractions of rate/2 (no aliasing); a ramp, not a step, so that a
# tiny change of F0 (float rounding between a stream and its offline run) changes the output only a little.
FADE_START, FADE_END = 0.9, 0.97
# Initial biases of the parameter conv: F0 near 150 Hz, voicing 0.5 and harmonics at -46 dB, so a warm start
# from an inverse-STFT head begins close to that head's output.
INIT_LOG_F0, INIT_LOG_AMPLITUDE = math.log(1.5), -5.0
# The parameter conv's output is multiplied by this (its init divided by it): Adam moves each weight by about
# the LR per step, so at a warm start's LR (3e-4) the log-amplitudes could climb only ~0.3 in 1,000 steps from
# -5 (measured: harmonics still 28 dB under the noise branch after 500 steps); ×20 lets them reach speech level.
PARAM_GAIN = 20.0


class HarmonicSynth(StreamingModule):
    """``(B, 1 + K, L)`` frames of ``[F0 in Hz, amplitude of harmonics 1..K]`` -> ``(B, 1, L·hop)`` samples.

    State: ``prev (B, 1 + K, 1)``, the last frame (zeros: silence at the start), and ``phase (B, 1, 1)`` float64,
    the fundamental's phase after the last emitted sample (float64 so that the phase a stream carries from chunk
    to chunk is the one an offline run computes).
    """

    def __init__(self, harmonics: int, hop: int, sample_rate: int) -> None:
        super().__init__()
        self.harmonics, self.hop, self.sample_rate = harmonics, hop, sample_rate
        self.register_buffer("ramp", (torch.arange(hop, dtype=torch.float32) + 1) / hop, persistent=False)
        self.register_buffer("orders", torch.arange(1, harmonics + 1, dtype=torch.float32)[None, :, None],
                             persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        return self.step(frames, *self.init_state(frames.shape[0]))[0]

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        device = self.ramp.device
        return (torch.zeros(batch, 1 + self.harmonics, 1, device=device),
                torch.zeros(batch, 1, 1, device=device, dtype=torch.float64))

    def state_names(self) -> list[str]:
        return ["prev", "phase"]

    def step(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        prev, phase = state
        with torch.autocast(frames.device.type, enabled=False):
            frames = self._silence_above_nyquist(frames.float())
            batch, _, length = frames.shape
            start = torch.cat([prev, frames[..., :-1]], dim=-1)  # (B, P, L): each frame's interpolation start
            f0 = (start[:, :1, :, None] + (frames - start)[:, :1, :, None] * self.ramp).reshape(batch, 1, -1)
            # The running phase is summed and wrapped in float64: in float32 a long offline clip would lose
            # the phase its streamed chunks carry; k·phase of a wrapped phase is exact enough in float32.
            run = _wrap(phase + torch.cumsum(f0.double() * (2 * math.pi / self.sample_rate), dim=-1))
            cycle = run.float().reshape(batch, length, 1, self.hop)
            sines = torch.sin(self.orders[0] * cycle)  # (B, L, K, hop)
            # Amplitudes ramp linearly from the previous frame's: y = a0·s + ramp·(a1 - a0)·s, as two
            # (1 x K) @ (K x hop) products per frame instead of a (B, K, N) amplitude tensor.
            a0 = start[:, 1:].transpose(1, 2).unsqueeze(2)  # (B, L, 1, K)
            da = frames[:, 1:].transpose(1, 2).unsqueeze(2) - a0
            y = (a0 @ sines + self.ramp * (da @ sines)).reshape(batch, 1, length * self.hop)
        return y, frames[..., -1:], run[..., -1:]

    def _silence_above_nyquist(self, frames: Tensor) -> Tensor:
        """Scale each harmonic's amplitude by a ramp from 1 at ``FADE_START`` to 0 at ``FADE_END`` of rate/2,
        per frame (before interpolation), so that no harmonic aliases."""
        f0, amps = frames[:, :1], frames[:, 1:]
        nyquist = self.sample_rate / 2
        audible = torch.clamp((FADE_END * nyquist - self.orders * f0) / ((FADE_END - FADE_START) * nyquist), 0.0, 1.0)
        return torch.cat([f0, amps * audible], dim=1)


def _wrap(phase: Tensor) -> Tensor:
    """``phase`` modulo 2π, in ``[0, 2π)``."""
    two_pi = 2 * math.pi
    return phase - two_pi * torch.floor(phase / two_pi)


class HarmonicHead(StreamingModule):
    """``(B, in_dim, L) -> (B, 1, L·hop)``: the ``ISTFTHead`` layers (noise branch) plus ``harmonic`` (1x1 conv to
    ``2 + K`` frame parameters) and ``synth``; the two branches add.

    ``forward_with_pitch`` also returns ``(B, L, 2)``: the predicted log(F0 / 100 Hz) and voicing logit per frame.
    """

    def __init__(self, in_dim: int, dim: int, hop: int, dilations: tuple[int, ...], kernel_size: int,
                 depthwise: bool, harmonics: int, sample_rate: int, overlap: int = 4) -> None:
        super().__init__()
        n_fft = overlap * hop
        self.snake_in = Snake1d(in_dim)
        self.conv_in = CausalConv1d(in_dim, dim, kernel_size)
        backbone = ["snake_in", "conv_in"]
        for i, d in enumerate(dilations):
            setattr(self, f"res{i + 1}", ResidualUnit(dim, d, kernel_size, dim if depthwise else 1))
            backbone.append(f"res{i + 1}")
        self.snake_out = Snake1d(dim)
        self.spectrum = CausalConv1d(dim, 2 * (n_fft // 2 + 1), 1)
        self.polar = PolarToCartesian()
        self.idft = InverseDFT(n_fft, hop)
        # No weight norm: it is undefined at the small initial weights that keep the harmonics quiet.
        self.harmonic = CausalConv1d(dim, 2 + harmonics, 1, use_weight_norm=False)
        with torch.no_grad():
            self.harmonic.conv.weight.normal_(0.0, 1e-3 / PARAM_GAIN)
            self.harmonic.conv.bias.fill_(INIT_LOG_AMPLITUDE / PARAM_GAIN)
            self.harmonic.conv.bias[0], self.harmonic.conv.bias[1] = INIT_LOG_F0 / PARAM_GAIN, 0.0
        self.synth = HarmonicSynth(harmonics, hop, sample_rate)
        self._order = backbone + ["snake_out", "spectrum", "polar", "idft", "harmonic", "synth"]
        self.n_fft, self.hop = n_fft, hop

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_pitch(x)[0]

    def forward_with_pitch(self, x: Tensor, f0_hz: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, in_dim, L)`` -> ``(audio (B, 1, L·hop), pitch (B, L, 2))``; ``f0_hz (B, L)``, where positive,
        replaces the predicted F0 fed to the oscillators (teacher forcing in training)."""
        noise, harmonic, pitch, _ = self._run(x, self.init_state(x.shape[0]), f0_hz)
        return noise + harmonic, pitch

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, in_dim, L)`` -> ``(noise (B, 1, L·hop), harmonic (B, 1, L·hop), pitch (B, L, 2))``: the two
        branches before they add (``benchmarks.harmonic_probe``)."""
        return self._run(x, self.init_state(x.shape[0]), None)[:3]

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return tuple(t for name in self._order for t in getattr(self, name).init_state(batch))

    def state_names(self) -> list[str]:
        return [f"{name}.{sub}" for name in self._order for sub in getattr(self, name).state_names()]

    def step(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        noise, harmonic, _, new_state = self._run(x, state, None)
        return (noise + harmonic, *new_state)

    def _run(self, x: Tensor, state: tuple[Tensor, ...], f0_hz: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        queue, new_state = list(state), []

        def call(name: str, inp: Tensor) -> Tensor:
            module = getattr(self, name)
            count = len(module.state_names())
            out, *child = module.step(inp, *queue[:count])
            del queue[:count]
            new_state.extend(child)
            return out

        if len(state) != len(self.state_names()):
            raise ValueError(f"HarmonicHead.step expects {len(self.state_names())} state tensors, got {len(state)}")
        h = x
        for name in self._order[:self._order.index("spectrum")]:
            h = call(name, h)
        noise = call("idft", call("polar", call("spectrum", h)))
        params = PARAM_GAIN * call("harmonic", h).float()  # (B, 2 + K, L)
        log_f0, voicing, log_amps = params[:, :1], params[:, 1:2], params[:, 2:]
        f0 = F0_REF * torch.exp(torch.clamp(log_f0, math.log(F0_MIN / F0_REF), math.log(F0_MAX / F0_REF)))
        f0 = f0.detach()
        if f0_hz is not None:
            f0 = torch.where(f0_hz[:, None] > 0, f0_hz[:, None].to(f0.dtype), f0)
        amps = torch.sigmoid(voicing) * torch.exp(torch.clamp(log_amps, max=MAX_LOG_AMPLITUDE))
        harmonic = call("synth", torch.cat([f0, amps], dim=1))
        pitch = torch.cat([log_f0, voicing], dim=1).transpose(1, 2)
        return noise, harmonic, pitch, new_state
