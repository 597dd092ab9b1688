"""Per-stream state over a shared ``CodecSession``: chunked encode/decode with explicit graph state."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from runtime.rvq import blas_single_thread

if TYPE_CHECKING:
    from runtime.codec import CodecSession

GroupCodes = tuple[np.ndarray, ...]


class CodecStream:
    """Streaming encoder and decoder state for one audio stream.

    ``encode`` buffers samples, runs the step graphs over every complete chunk of frames (largest
    chunk graph first, the group-sized graph for the remainder) and buffers latent frames until a
    whole 4-frame group exists; it returns the codes of every group completed by this call.
    ``decode`` turns whole groups back into audio through the decoder step graphs.

    Buffers have fixed sizes (house style: no concatenate-and-truncate on the real-time path): input
    longer than ``max_slice_seconds`` is processed in slices of that length, so a long file fed in one
    call never grows them. ``search_seconds`` accumulates the time spent in the codeword search.
    """

    def __init__(self, session: "CodecSession", max_slice_seconds: float = 15.0) -> None:
        self.session = session
        self._rvq = session.new_searcher()  # own search buffers: streams may run in threads
        hop, group = session.hop, session.group_frames
        self._slice = max(1, int(max_slice_seconds * session.sample_rate) // hop) * hop
        # After a slice, fewer than (smallest chunk + 1) frames of samples and fewer than one group of
        # latent frames are left over: that bounds both buffers.
        self._pcm = np.zeros(self._slice + (min(session.chunk_frames) + 1) * hop, dtype=np.float32)
        self._lat = np.zeros((len(self._pcm) // hop + group, session.bundle.latent_dim), dtype=np.float32)
        self.search_seconds = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget all buffered audio and latents and return both graphs to their initial state."""
        s = self.session
        self._enc_state = s.initial_state("encoder")
        self._dec_state = s.initial_state("decoder")
        self._n_pcm = 0
        self._n_lat = 0
        self.samples_in = 0

    def encode(self, pcm: np.ndarray) -> list[GroupCodes]:
        """Feed mono float32 ``(n,)`` at the codec rate -> ``[(c1 (1,), c2 (2,), c3 (4,)), ...]`` per
        completed group (strides 4/2/1), oldest first; an empty list until a group completes."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.samples_in += len(pcm)
        out: list[GroupCodes] = []
        for start in range(0, len(pcm), self._slice):
            out += self._encode_slice(pcm[start:start + self._slice])
        return out

    def _encode_slice(self, pcm: np.ndarray) -> list[GroupCodes]:
        s = self.session
        n = self._n_pcm + len(pcm)
        self._pcm[self._n_pcm:n] = pcm
        pos = 0
        for k in s.plan_chunks(n // s.hop):
            latent, self._enc_state = s.run_step("encoder", k, self._pcm[pos:pos + k * s.hop][None, None],
                                                 self._enc_state)
            self._lat[self._n_lat:self._n_lat + k] = latent[0].T
            self._n_lat += k
            pos += k * s.hop
        self._pcm[:n - pos] = self._pcm[pos:n]  # the short tail moves to the front (no allocation)
        self._n_pcm = n - pos
        return self._drain_groups()

    def flush(self) -> list[GroupCodes]:
        """Zero-pad the buffered tail to a whole group and return its codes (end of stream)."""
        s = self.session
        pending = self._n_pcm + self._n_lat * s.hop
        if pending == 0:
            return []
        group = s.group_frames * s.hop
        pad = -pending % group
        out = self.encode(np.zeros(pad, dtype=np.float32))
        self.samples_in -= pad
        return out

    def _drain_groups(self) -> list[GroupCodes]:
        s = self.session
        g = self._n_lat // s.group_frames
        if g == 0:
            return []
        used = g * s.group_frames
        t0 = time.perf_counter()
        with blas_single_thread():
            codes, _ = self._rvq(self._lat[:used])
        self.search_seconds += time.perf_counter() - t0
        self._lat[:self._n_lat - used] = self._lat[used:self._n_lat]
        self._n_lat -= used
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
