"""Per-stream state over a shared ``CodecSession``: chunked encode/decode with explicit graph state."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from runtime.rvq import blas_single_thread, make_rvq

if TYPE_CHECKING:
    from runtime.codec import CodecSession

GroupCodes = tuple[np.ndarray, ...]


class CodecStream:
    """Streaming encoder and decoder state for one audio stream.

    ``encode`` buffers samples, runs the step graphs over every complete chunk of frames (largest
    chunk graph first, the group-sized graph for the remainder) and buffers latent frames until a
    whole 4-frame group exists; it returns the codes of every group completed by this call.
    ``decode`` turns whole groups back into audio through the decoder step graphs.
    """

    def __init__(self, session: "CodecSession") -> None:
        self.session = session
        self._rvq = make_rvq(session.tables, session.strides)  # own search buffers: streams may run in threads
        self.reset()

    def reset(self) -> None:
        """Forget all buffered audio and latents and return both graphs to their initial state."""
        s = self.session
        self._enc_state = s.bundle.initial_state("encoder")
        self._dec_state = s.bundle.initial_state("decoder")
        self._pcm = np.zeros(0, dtype=np.float32)
        self._latent = np.zeros((0, s.bundle.latent_dim), dtype=np.float32)
        self.samples_in = 0

    def encode(self, pcm: np.ndarray) -> list[GroupCodes]:
        """Feed mono float32 ``(n,)`` at the codec rate -> ``[(c1 (1,), c2 (2,), c3 (4,)), ...]`` per
        completed group (strides 4/2/1), oldest first; an empty list until a group completes."""
        s = self.session
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.samples_in += len(pcm)
        self._pcm = np.concatenate([self._pcm, pcm])
        frames = []
        pos = 0
        for k in s.plan_chunks(len(self._pcm) // s.hop):
            chunk = self._pcm[pos:pos + k * s.hop][None, None]
            latent, self._enc_state = s.run_step("encoder", k, chunk, self._enc_state)
            frames.append(latent[0].T)
            pos += k * s.hop
        self._pcm = self._pcm[pos:]
        if frames:
            self._latent = np.concatenate([self._latent, *frames])
        return self._drain_groups()

    def flush(self) -> list[GroupCodes]:
        """Zero-pad the buffered tail to a whole group and return its codes (end of stream)."""
        s = self.session
        pending = len(self._pcm) + len(self._latent) * s.hop
        if pending == 0:
            return []
        group = s.group_frames * s.hop
        pad = -pending % group
        out = self.encode(np.zeros(pad, dtype=np.float32))
        self.samples_in -= pad
        return out

    def _drain_groups(self) -> list[GroupCodes]:
        s = self.session
        g = len(self._latent) // s.group_frames
        if g == 0:
            return []
        ready, self._latent = self._latent[:g * s.group_frames], self._latent[g * s.group_frames:]
        with blas_single_thread():
            codes, _ = self._rvq(ready)
        per_group = [s.group_frames // st for st in s.strides]
        return [tuple(c[i * n:(i + 1) * n] for c, n in zip(codes, per_group)) for i in range(g)]

    def decode(self, codes: Sequence[GroupCodes] | Sequence[np.ndarray]) -> np.ndarray:
        """Whole groups -> mono float32 ``(groups * 4 * hop,)``.

        ``codes`` is either a list of per-group tuples (what ``encode`` returns) or one tuple of
        per-layer arrays ``(c1 (g,), c2 (2g,), c3 (4g,))``."""
        layers = join_groups(codes, len(self.session.strides))
        if len(layers[0]) == 0:
            return np.zeros(0, dtype=np.float32)
        s = self.session
        latent = s.dequantize(layers)
        out, pos = [], 0
        for k in s.plan_chunks(len(latent)):
            chunk = np.ascontiguousarray(latent[pos:pos + k].T[None])
            audio, self._dec_state = s.run_step("decoder", k, chunk, self._dec_state)
            out.append(audio.reshape(-1))
            pos += k
        if pos != len(latent):
            raise ValueError(f"{len(latent)} latent frames do not split into the chunk graphs {s.chunk_frames}")
        return np.concatenate(out)


def join_groups(codes: Sequence, n_layers: int) -> list[np.ndarray]:
    """Per-group tuples or per-layer arrays -> per-layer int64 arrays."""
    if len(codes) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(n_layers)]
    if isinstance(codes[0], (tuple, list)):
        return [np.concatenate([np.asarray(g[l], dtype=np.int64).reshape(-1) for g in codes])
                for l in range(n_layers)]
    return [np.asarray(c, dtype=np.int64).reshape(-1) for c in codes]
