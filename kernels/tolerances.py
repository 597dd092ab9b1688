"""The project's ONE table of parity tolerances (house style §6: a ladder with tolerances in one table).

Torch-free data, read by export's own gates (``export.verify``, ``export.tensorrt``) and by the tests
(``tests/tolerances.py`` adds the checking helpers). Add a row per comparison, named
``<what>_<candidate>_vs_<reference>``; say in ``note`` why the number is what it is. Rules:

- Values (scores, latents): ``max|x - ref| <= ref_factor * max|x_torch - ref| + atol + rtol * max|ref|``
  where ``x_torch`` is torch itself at the candidate's precision (the Triton-tutorial rule "at most
  twice as far from the fp32 reference as torch at that precision, plus a dtype atol");
  ``ref_factor=None`` drops that term (the candidate is held to atol/rtol alone).
- Code indices: equal, except at near-ties: a mismatch is allowed only where the two best reference
  scores differ by less than ``tie_eps`` *and* the chosen code scores within ``tie_eps`` of the best;
  the near-tie mismatch rate is returned so tests can report it, and must stay <= ``max_tie_rate``.
- Audio: ``min_snr_db`` (SNR of candidate vs reference, dB).
- ``grow_from_d``: fp32 rounding of a length-D dot product grows like sqrt(D) (random-walk summation
  error); such rows are stated at that D and :meth:`Tol.at_dim` scales ``atol`` and ``tie_eps`` by
  ``sqrt(D / grow_from_d)`` for longer vectors (the 4096-d LLaMA-2 table, 640-d Gemma).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Tol:
    atol: float = 0.0
    rtol: float = 0.0
    ref_factor: float | None = None
    tie_eps: float | None = None
    max_tie_rate: float = 0.0
    min_snr_db: float | None = None
    grow_from_d: int | None = None
    note: str = ""

    def at_dim(self, d: int) -> "Tol":
        """This row for vectors of length ``d``: ``atol``/``tie_eps`` scaled by sqrt(d / grow_from_d) (>= 1)."""
        if self.grow_from_d is None or d <= self.grow_from_d:
            return self
        k = math.sqrt(d / self.grow_from_d)
        return replace(self, atol=self.atol * k, tie_eps=None if self.tie_eps is None else self.tie_eps * k)


TOLERANCES: dict[str, Tol] = {
    # --- kernels/ (issue 4): cosine nearest codeword, scores in [-1, 1] --------------------------
    "nearest_numpy_f32_vs_ref": Tol(
        atol=5e-6, tie_eps=1e-5, max_tie_rate=0.01, grow_from_d=64,
        note="float32 BLAS in blocks vs one fp32 matmul: only the summation order differs"),
    "nearest_triton_f32_vs_ref": Tol(
        ref_factor=2.0, atol=5e-6, tie_eps=1e-5, max_tie_rate=0.01, grow_from_d=64,
        note="IEEE fp32 tl.dot (TF32 off), fp32 accumulation; torch fp32 is the reference itself"),
    "nearest_triton_f16_vs_ref": Tol(
        ref_factor=2.0, atol=2e-4, tie_eps=1e-3, max_tie_rate=0.05,
        note="queries rounded to fp16 (2^-11 relative) before an fp32-accumulated dot: "
             "|err| <= 2^-11 * sum|q c| <= 4.9e-4 bounds the index flips"),
    "nearest_triton_bf16_vs_ref": Tol(
        ref_factor=2.0, atol=2e-3, tie_eps=1.6e-2, max_tie_rate=0.2,
        note="bf16 query rounding (2^-8; the CPU interpreter truncates: 2^-7)"),
    "rvq_numpy_vs_ref": Tol(
        atol=1e-5, rtol=1e-6, tie_eps=1e-5, max_tie_rate=0.01,
        note="float32 pooling/subtraction order differs from torch avg_pool1d by a few ulps"),
    "rvq_triton_f32_vs_ref": Tol(
        atol=1e-5, rtol=1e-6, tie_eps=1e-5, max_tie_rate=0.01, grow_from_d=64,
        note="fp32 tables; quantised latent compared only where all codes agree"),
    # --- export/ + runtime/ (issue 3): the codec graphs, compared on the golden pairs -----------
    "latent_torch_stream_vs_torch_offline": Tol(
        min_snr_db=80.0,
        note="the same fp32 convs over different chunk shapes (1, 2, 3, 4 frames): only summation "
             "order differs (measured >= 120 dB on the tiny model)"),
    "audio_oscillator_torch_stream_vs_torch_offline": Tol(
        atol=2e-3, min_snr_db=60.0,
        note="decoder_head=harmonic integrates its predicted F0 into a phase, so a float-rounding change "
             "dF0 of the F0 (~1e-7 relative, from the convs' chunk shapes) moves harmonic k's phase by "
             "2*pi*k*dF0*t: measured max 9.5e-4 (SNR >= 72 dB) over 0.72 s with 64 harmonics near -10 dB on "
             "the tiny model (every other head: 1e-5); export.verify's 60 dB gate holds (>= 69 dB measured)"),
    "codec_ort_cpu_vs_torch": Tol(
        min_snr_db=60.0, tie_eps=1e-4, max_tie_rate=0.01,
        note="ORT CPU vs torch eager, every step/offline output and state (measured >= 120 dB); "
             "export.verify reads its gate (ORT_MIN_SNR_DB, NEAR_TIE_EPS) from this row"),
    "audio_runtime_stream_vs_runtime_offline": Tol(
        min_snr_db=60.0,
        note="the runtime's chunked step graphs (4/8-frame mix) vs its offline graph on real speech"),
    "codec_trt_fp32_vs_torch": Tol(
        min_snr_db=50.0,
        note="TensorRT fp32 engines (TF32 allowed by default) vs torch on the golden pairs; "
             "export.tensorrt reads its gate (TRT_FP32_MIN_SNR_DB) from this row"),
    # --- runtime/lm_head (issue 12): an audio-head GGUF vs its full model, logits at kept ids ----
    "llm_audio_head_vs_full_logits": Tol(
        atol=1e-5, rtol=1e-6,
        note="same weights and hidden states; llama.cpp tiles an f32 head matmul by its row count, so "
             "only the summation order differs (measured 2e-6); the Gemma Q8_0 head: bit-identical"),
    "codec_trt_fp16_vs_torch": Tol(
        min_snr_db=None,
        note="reported only: fp16 engines with reductions/softmax/normalisation/unary ops pinned to fp32"),
}
