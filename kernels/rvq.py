"""Multi-scale residual quantisation step on the GPU (Triton) and its torch reference.

Per layer l with stride s: average-pool the residual over s frames, normalise, search the
layer's normalised table, then subtract the *unnormalised* projected row (held for s frames)
from the residual and add it to the quantised sum. On the GPU each layer is two launches of the
fused search (pooling happens on the query load, see ``kernels.nearest``) plus one update
launch; :class:`TritonRvq` captures the whole 3-layer sequence for a fixed chunk shape in one
CUDA graph, so the runtime pays one graph launch per group. A single fused kernel over all three
layers is not practical: the split-N search needs a grid-wide reduction between layers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import torch
import triton
import triton.language as tl

from .nearest import INTERPRET, nearest_codeword_reference, nearest_codeword_triton

Tables = Sequence[tuple[torch.Tensor, torch.Tensor]]


def rvq_step_reference(latent: torch.Tensor, tables: Tables, strides: Sequence[int] = (4, 2, 1),
                       compute_dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Torch reference. latent ``(T, D)`` or ``(B, T, D)``, T a multiple of ``strides[0]``;
    tables: ``(rows (N_l, D), normed (N_l, D))`` per layer. Returns codes (int64,
    ``(.., T / s_l)``) and the quantised latent (float32, latent's shape)."""
    x, b, t, d = _as_btd(latent, tables, strides)
    residual = x.float().clone()
    quant = torch.zeros_like(residual)
    codes = []
    for (rows, normed), s in zip(tables, strides):
        pooled = torch.nn.functional.avg_pool1d(residual.transpose(1, 2), s, s).transpose(1, 2)
        idx, _ = nearest_codeword_reference(pooled.reshape(-1, d), normed, compute_dtype)
        q = rows.float()[idx].reshape(b, t // s, d).repeat_interleave(s, dim=1)
        residual -= q
        quant += q
        codes.append(idx.reshape(b, t // s) if latent.ndim == 3 else idx)
    return codes, quant.reshape(latent.shape)


@triton.jit
def _residual_update_kernel(res_ptr, quant_ptr, rows_ptr, idx_ptr, F, D, stride_r,
                            POOL: tl.constexpr, FIRST: tl.constexpr,
                            BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr):
    """residual[f] -= rows[idx[f // POOL]]; quant[f] (=|+=) the same row. res/quant (F, D) fp32."""
    rf = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    rd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rf[:, None] < F) & (rd[None, :] < D)
    code = tl.load(idx_ptr + rf // POOL, mask=rf < F, other=0)
    row = tl.load(rows_ptr + code[:, None] * stride_r + rd[None, :], mask=mask, other=0.0).to(tl.float32)
    offs = rf[:, None] * D + rd[None, :]
    r = tl.load(res_ptr + offs, mask=mask)
    tl.store(res_ptr + offs, r - row, mask=mask)
    if FIRST:
        tl.store(quant_ptr + offs, row, mask=mask)
    else:
        tl.store(quant_ptr + offs, tl.load(quant_ptr + offs, mask=mask) + row, mask=mask)


def rvq_step_triton(latent: torch.Tensor, tables: Tables, strides: Sequence[int] = (4, 2, 1),
                    out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Triton path of :func:`rvq_step_reference` (same shapes). ``out`` = preallocated
    ``(residual, quant)`` float32 ``(B*T, D)`` work buffers (used by the CUDA graph)."""
    x, b, t, d = _as_btd(latent, tables, strides)
    flat = x.reshape(b * t, d)
    if out is None:
        # Plain row-major buffers: empty_like would copy the strides of a non-contiguous latent, and
        # the update kernel indexes its buffers as (F, D) row-major.
        residual, quant = (torch.empty((b * t, d), dtype=torch.float32, device=flat.device) for _ in range(2))
    else:
        residual, quant = out
        if not (residual.is_contiguous() and quant.is_contiguous()):
            raise ValueError("rvq_step_triton: the out= work buffers must be contiguous (B*T, D) float32")
    residual.copy_(flat)
    codes = []
    for l, ((rows, normed), s) in enumerate(zip(tables, strides)):
        idx, _ = nearest_codeword_triton(residual, normed, pool=s)
        rows = rows if rows.stride(1) == 1 else rows.contiguous()
        grid = (triton.cdiv(b * t, 16), triton.cdiv(d, 128))
        _residual_update_kernel[grid](residual, quant, rows, idx, b * t, d, rows.stride(0),
                                      POOL=s, FIRST=l == 0, BLOCK_F=16, BLOCK_D=128)
        codes.append(idx.reshape(b, t // s) if latent.ndim == 3 else idx)
    return codes, quant.reshape(latent.shape)


class TritonRvq:
    """Per-group GPU quantiser for a fixed chunk shape ``(batch, frames, D)``.

    With ``graph=True`` (CUDA only) the first call autotunes, then the 3-layer sequence is
    captured once in a CUDA graph; later calls copy the input and replay it. The returned tensors
    are static buffers overwritten by the next call: clone them to keep them.
    """

    def __init__(self, tables: Tables, strides: Sequence[int] = (4, 2, 1), batch: int = 1,
                 frames: int = 4, graph: bool = True) -> None:
        self.tables = [(r.contiguous(), n.contiguous()) for r, n in tables]
        self.strides = tuple(int(s) for s in strides)
        d = self.tables[0][0].shape[1]
        dev = self.tables[0][0].device
        self.shape = (batch, frames, d)
        self._x = torch.zeros(self.shape, dtype=torch.float32, device=dev)
        self._work = tuple(torch.empty(batch * frames, d, dtype=torch.float32, device=dev) for _ in range(2))
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: tuple[list[torch.Tensor], torch.Tensor] | None = None
        self.use_graph = graph and dev.type == "cuda" and not INTERPRET

    def _run(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        return rvq_step_triton(self._x, self.tables, self.strides, out=self._work)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # autotune + compile outside the capture
                self._run()
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = self._run()

    def __call__(self, latent: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """latent ``(batch, frames, D)`` (or ``(frames, D)`` when batch is 1) -> (codes, quant)."""
        if latent.numel() != self._x.numel() or latent.shape[-1] != self.shape[2]:
            raise ValueError(f"this TritonRvq was built for {self.shape}, got {tuple(latent.shape)}")
        self._x.copy_(latent.reshape(self.shape))
        if not self.use_graph:
            return self._run()
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._out


def _as_btd(latent: torch.Tensor, tables: Tables, strides: Sequence[int]) -> tuple[torch.Tensor, int, int, int]:
    if len(tables) != len(strides):
        raise ValueError(f"{len(tables)} tables but {len(strides)} strides")
    if any(int(s) < 1 for s in strides) or any(strides[0] % s for s in strides):
        raise ValueError(f"strides {tuple(strides)} must be positive and divide the first")
    d = tables[0][0].shape[1]
    if latent.ndim not in (2, 3) or latent.shape[-1] != d:
        raise ValueError(f"latent must be (T, {d}) or (B, T, {d}), got {tuple(latent.shape)}")
    if latent.shape[-2] % strides[0]:
        raise ValueError(f"T={latent.shape[-2]} is not a whole number of {strides[0]}-frame groups")
    x = latent if latent.ndim == 3 else latent[None]
    return x, x.shape[0], x.shape[1], d


class TritonRvqNumpy:
    """The runtime's per-stream quantiser on the GPU: numpy latent in, numpy codes out (``NumpyRvq``'s
    interface), one :class:`TritonRvq` (CUDA-graph replay) per chunk length, tables resident on the device.

    ``device``: "cuda" (default when available), or "cpu" under ``TRITON_INTERPRET=1`` for tests.
    """

    def __init__(self, tables: Sequence[tuple[object, object]], strides: Sequence[int] = (4, 2, 1),
                 device: str | None = None) -> None:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type != "cuda" and not INTERPRET:
            raise RuntimeError("the Triton search needs a CUDA GPU (or TRITON_INTERPRET=1 for CPU tests)")
        self.tables = [(torch.as_tensor(r, dtype=torch.float32, device=dev).contiguous(),
                        torch.as_tensor(n, dtype=torch.float32, device=dev).contiguous()) for r, n in tables]
        self.strides, self.device = tuple(int(s) for s in strides), dev
        self._by_frames: dict[int, TritonRvq] = {}

    def __call__(self, latent: "np.ndarray") -> tuple[list["np.ndarray"], "np.ndarray"]:
        """latent ``(T, D)`` numpy, T a multiple of ``strides[0]`` -> (codes per layer, quantised ``(T, D)``)."""
        frames = int(latent.shape[0])
        if frames not in self._by_frames:
            self._by_frames[frames] = TritonRvq(self.tables, self.strides, batch=1, frames=frames)
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32)).to(self.device)
        codes, quant = self._by_frames[frames](x)
        return [c.reshape(-1).cpu().numpy() for c in codes], quant.reshape(latent.shape).cpu().numpy()
