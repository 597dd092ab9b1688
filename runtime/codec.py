"""Torch-free codec runtime: onnxruntime sessions over a validated bundle.

``CodecSession`` is immutable after construction (graphs, tables, token maps); per-stream state lives
in ``CodecStream`` objects from ``session.new_stream()``, so many streams can share one session.

CLI: ``python -m runtime.codec encode|decode|roundtrip ...`` (see ``runtime/codec_cli.py``).
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from runtime.audio import read_audio, write_audio
from runtime.bundle import Bundle, BundleError, graph_name
from runtime.providers import PROVIDERS, device_type, provider_list, trt_cache_dir, trt_options
from runtime.rvq import blas_single_thread, dequantize, rvq_step
from runtime.tokens_file import TokensFile

if TYPE_CHECKING:
    from runtime.codec_stream import CodecStream

__all__ = ["CodecSession", "PROVIDERS", "ProviderFallbackWarning"]
Codes = tuple[np.ndarray, ...]


class ProviderFallbackWarning(RuntimeWarning):
    """onnxruntime did not use the requested execution provider (it silently falls back to CPU)."""


class CodecSession:
    """A loaded codec bundle.

    Args:
        bundle: bundle directory (or a ``Bundle``); validated (format_version, files, sha256).
        provider: "cpu", "cuda" or "tensorrt" (onnxruntime execution providers).
        search: codeword search of streams: "auto" (Triton with CUDA on the GPU providers, else numpy),
            "numpy", or "triton" (an error where it cannot run).
        threads: intra-op threads per graph (None: onnxruntime's default).
        verify_hashes: sha256 every bundle file on load (about 1 s per 500 MB; the paper preset's
            bundle is ~800 MB). Presence and format_version are always checked.
        io_binding: keep the step graphs' streaming state in the provider's memory between steps
            (onnxruntime I/O binding: on the GPU only the audio chunk in and the output out cross the
            bus). None: on for the GPU providers, off on "cpu" (where it gains nothing).
        trt_fp16: TensorRT engines in fp16 (None: what ``export.tensorrt`` recorded in the manifest).
    """

    def __init__(self, bundle: str | Path | Bundle, provider: str = "cpu", threads: int | None = None,
                 verify_hashes: bool = True, search: str = "auto", io_binding: bool | None = None,
                 trt_fp16: bool | None = None) -> None:
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle, verify_hashes)
        self.provider, self.threads = provider, threads
        self._ort = ort
        self._sessions: dict[str, Any] = {}
        self._fallback_reported = False
        cb = self.bundle.load_codebooks()
        try:
            n = len(self.bundle.strides)
            self.normed = [np.ascontiguousarray(cb[f"layer{l}_normed_f32"]) for l in range(1, n + 1)]
            self.rows = [np.ascontiguousarray(cb[f"layer{l}_rows_f32"]) for l in range(1, n + 1)]
            self.token_tables = self._token_tables(cb, n)
        except KeyError as e:
            raise BundleError(f"{self.bundle.path / 'codebooks.npz'}: missing array {e}") from None
        self.tables = list(zip(self.rows, self.normed))
        self.vocab_size = int(self.bundle.manifest["vocab"]["size"])
        self.word_token_ids = self.token_tables[0]
        self._inverse = [_inverse_table(t, self.vocab_size, l) for l, t in enumerate(self.token_tables, start=1)]
        self.word_table_sha256 = _table_sha256(self.word_token_ids)
        self.token_tables_sha256 = [_table_sha256(t) for t in self.token_tables]
        self.bundle_id = self.bundle_id_of(self.bundle)
        recorded = self.bundle.manifest.get("tensorrt") or {}
        self.trt_fp16 = bool(recorded.get("fp16", False)) if trt_fp16 is None else trt_fp16
        self.trt_cache = trt_cache_dir(self.bundle.path, self.bundle_id) if provider == "tensorrt" else None
        self.graph(graph_name("encoder_step", self.chunk_frames[0]))  # report a provider fallback now
        self.io_binding = provider != "cpu" if io_binding is None else io_binding
        self.device = device_type(self.active_providers) if self.io_binding else "cpu"
        self.search_backend = self._pick_search(search)

    @staticmethod
    def bundle_id_of(bundle: Bundle) -> str:
        """``sha256:<32 hex>`` over the codebooks' and decoder graphs' hashes: codes are only
        interchangeable between bundles with identical tables and decoder graphs."""
        ids = [bundle.manifest["files"][f] for f in sorted(bundle.manifest["files"])
               if f == "codebooks.npz" or f.startswith("decoder_")]
        return "sha256:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]

    def _pick_search(self, search: str) -> str:
        """The codeword search of streams: "triton" on the GPU providers when it can run, else "numpy"
        (the CPU path never imports torch)."""
        if search not in ("auto", "numpy", "triton"):
            raise ValueError(f"unknown search {search!r}; choose auto, numpy or triton")
        if search == "numpy" or (search == "auto" and self.provider == "cpu"):
            return "numpy"
        from kernels import gpu_search_available

        why = gpu_search_available()
        if why is None:
            return "triton"
        if search == "triton":
            raise RuntimeError(f"the Triton codeword search cannot run here: {why}")
        warnings.warn(f"provider {self.provider!r}: the Triton codeword search is unavailable ({why}); "
                      "searching with numpy on the CPU", RuntimeWarning, stacklevel=3)
        return "numpy"

    def new_searcher(self):
        """A per-stream quantiser (``runtime.rvq.make_rvq``) on this session's search backend."""
        from runtime.rvq import make_rvq

        return make_rvq(self.tables, self.strides, self.search_backend)

    # -- bundle facts -------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """The LLM vocabulary fingerprint the codebooks were built from (``sha256:<hex>``)."""
        return self.bundle.fingerprint

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    @property
    def hop(self) -> int:
        return self.bundle.hop

    @property
    def strides(self) -> tuple[int, ...]:
        return self.bundle.strides

    @property
    def group_frames(self) -> int:
        return self.bundle.group_frames

    @property
    def chunk_frames(self) -> tuple[int, ...]:
        return self.bundle.chunk_frames

    # -- graphs -------------------------------------------------------------------------------
    def graph(self, name: str):
        """The onnxruntime session of graph ``name`` (created on first use)."""
        if name not in self._sessions:
            ort = self._ort
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            trt = None
            if self.trt_cache is not None:
                self.trt_cache.mkdir(parents=True, exist_ok=True)
                trt = trt_options(self.trt_cache, self.trt_fp16)
            sess = ort.InferenceSession(str(self.bundle.graph_path(name)), sess_options=opts,
                                        providers=provider_list(self.provider, trt))
            self._check_provider(sess)
            self._sessions[name] = sess
        return self._sessions[name]

    def _check_provider(self, sess) -> None:
        wanted = PROVIDERS[self.provider][0]
        used = sess.get_providers()
        if wanted not in used and not self._fallback_reported:
            self._fallback_reported = True
            warnings.warn(f"onnxruntime could not use {wanted} (available here: "
                          f"{self._ort.get_available_providers()}); running on {used[0]} instead",
                          ProviderFallbackWarning, stacklevel=3)

    @property
    def active_providers(self) -> list[str]:
        return next(iter(self._sessions.values())).get_providers()

    def initial_state(self, part: str) -> list[Any]:
        """The initial streaming state of ``part`` ("encoder"/"decoder"): numpy arrays, or with I/O
        binding onnxruntime ``OrtValue`` tensors in the provider's memory (opaque to callers)."""
        state = self.bundle.initial_state(part)
        if not self.io_binding:
            return state
        return [self._ort.OrtValue.ortvalue_from_numpy(s, self.device, 0) for s in state]

    def run_step(self, part: str, k: int, x: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """One ``{part}_step_c{k}`` call: ``x`` audio ``(1, 1, k*hop)`` or latent ``(1, D, k)`` -> (y, new state).

        ``state`` comes from :meth:`initial_state` or the previous call (numpy, or device-resident
        ``OrtValue`` tensors with I/O binding: then only ``x`` and ``y`` cross to and from the host)."""
        name = graph_name(f"{part}_step", k)
        spec = self.bundle.graphs[name]
        if self.io_binding:
            return self._run_bound(name, spec, x, state)
        feeds = {spec.inputs[0].name: x, **{t.name: s for t, s in zip(spec.inputs[1:], state)}}
        y, *new_state = self.graph(name).run([t.name for t in spec.outputs], feeds)
        return y, new_state

    def _run_bound(self, name: str, spec: Any, x: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        ort, dev, sess = self._ort, self.device, self.graph(name)
        binding = sess.io_binding()
        binding.bind_cpu_input(spec.inputs[0].name, np.ascontiguousarray(x, dtype=np.float32))
        for t, s in zip(spec.inputs[1:], state):
            binding.bind_ortvalue_input(t.name, s)
        binding.bind_output(spec.outputs[0].name, "cpu")
        # Fresh device tensors for the new state (onnxruntime's arena makes this cheap): the caller's
        # old state stays valid, as with the numpy path.
        new_state = [ort.OrtValue.ortvalue_from_shape_and_type([int(d) for d in t.shape], np.dtype(t.dtype), dev, 0)
                     for t in spec.outputs[1:]]
        for t, v in zip(spec.outputs[1:], new_state):
            binding.bind_ortvalue_output(t.name, v)
        sess.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy(), new_state

    def plan_chunks(self, frames: int) -> list[int]:
        """Split ``frames`` into the available chunk graphs, largest first (leftover < smallest is left)."""
        plan = []
        for k in sorted(self.chunk_frames, reverse=True):
            while frames >= k:
                plan.append(k)
                frames -= k
        return plan

    # -- quantiser and token maps -------------------------------------------------------------
    def quantize(self, latent: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Latent ``(T, D)`` (T a multiple of the group) -> (codes per layer, quantised ``(T, D)``)."""
        with blas_single_thread():  # predictable on a shared 2-core box; see runtime.rvq
            return rvq_step(latent, self.tables, self.strides)

    def dequantize(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        """Codes per layer -> summed quantised latent ``(T, D)`` (what the decoder graphs take)."""
        self._check_codes(codes)
        return dequantize(codes, self.rows, self.strides)

    def _check_codes(self, codes: Sequence[np.ndarray]) -> None:
        if len(codes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} code layers, got {len(codes)}")
        groups = len(codes[0])
        for layer, (c, s, size) in enumerate(zip(codes, self.strides, self.bundle.codebook_sizes), start=1):
            c = np.asarray(c)
            if c.shape != (groups * self.group_frames // s,):
                raise ValueError(f"layer {layer}: {c.shape} codes for {groups} groups")
            if c.size and (c.min() < 0 or c.max() >= size):
                raise ValueError(f"layer {layer}: codes must lie in 0..{size - 1}")

    def code_to_token(self, layer: int, codes: np.ndarray) -> np.ndarray:
        """LLM token ids of layer ``layer`` (1-based) codes: ``token_tables[layer - 1][codes]``."""
        codes = np.asarray(codes, dtype=np.int64)
        size = self._layer_size(layer)
        if codes.size and (codes.min() < 0 or codes.max() >= size):
            raise ValueError(f"layer-{layer} codes must lie in 0..{size - 1}")
        return self.token_tables[layer - 1][codes]

    def token_to_code(self, layer: int, ids: np.ndarray) -> np.ndarray:
        """Codes of LLM token ``ids`` for layer ``layer``; ids outside the layer's token table raise."""
        ids = np.asarray(ids, dtype=np.int64)
        self._layer_size(layer)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
        codes = self._inverse[layer - 1][ids]
        if (codes < 0).any():
            bad = ids[codes < 0][:5].tolist()
            raise ValueError(f"token ids {bad} are not in the layer-{layer} token table")
        return codes

    def layer_mask(self, layer: int, n_vocab: int | None = None) -> np.ndarray:
        """``(n_vocab,)`` bool: the LLM ids that layer ``layer``'s codes map to (for masked decoding)."""
        self._layer_size(layer)
        mask = np.zeros(self.vocab_size if n_vocab is None else n_vocab, dtype=bool)
        mask[self.token_tables[layer - 1]] = True
        return mask

    def _token_tables(self, cb: dict[str, np.ndarray], n_layers: int) -> list[np.ndarray]:
        if "layer1_token_ids" not in cb:  # format_version 1: word table, then code = id
            words = np.asarray(cb["word_token_ids"], dtype=np.int64)
            sizes = self.bundle.codebook_sizes
            return [words] + [np.arange(sizes[l], dtype=np.int64) for l in range(1, n_layers)]
        tables = [np.asarray(cb[f"layer{l}_token_ids"], dtype=np.int64) for l in range(1, n_layers + 1)]
        for l, (t, size) in enumerate(zip(tables, self.bundle.codebook_sizes), start=1):
            if t.shape != (size,):
                raise BundleError(f"{self.bundle.path / 'codebooks.npz'}: layer{l}_token_ids has shape "
                                  f"{t.shape}, the manifest says {size} codes")
        return tables

    def _layer_size(self, layer: int) -> int:
        if not 1 <= layer <= len(self.strides):
            raise ValueError(f"layer must be 1..{len(self.strides)}, got {layer}")
        return self.bundle.codebook_sizes[layer - 1]

    # -- offline ------------------------------------------------------------------------------
    def encode(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Offline encode mono float32 ``(n,)`` at the codec rate -> codes per layer.

        The tail is zero-padded to whole groups (``ceil(n / (4 * hop))`` groups)."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        group = self.group_frames * self.hop
        padded = np.zeros(-(-max(len(pcm), 1) // group) * group, dtype=np.float32)
        padded[:len(pcm)] = pcm
        (latent,) = self.graph("encoder_offline").run(None, {"audio": padded[None, None]})
        return self.quantize(latent[0].T)[0]

    def decode(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        """Offline decode codes per layer -> mono float32 ``(groups * 4 * hop,)``."""
        latent = self.dequantize(codes)
        (audio,) = self.graph("decoder_offline").run(None, {"latent": np.ascontiguousarray(latent.T[None])})
        return audio.reshape(-1)

    def encode_file(self, path: str | Path) -> TokensFile:
        """Read any audio file (mixed to mono, resampled) and encode it offline."""
        pcm = read_audio(path, self.sample_rate)
        return self.tokens(self.encode(pcm), len(pcm))

    def tokens(self, codes: list[np.ndarray], n_samples: int) -> TokensFile:
        """Wrap codes in a ``TokensFile`` stamped with this bundle's identity."""
        return TokensFile(codes=[np.asarray(c, dtype=np.int64) for c in codes], fingerprint=self.fingerprint,
                          word_table_sha256=self.word_table_sha256, bundle_id=self.bundle_id,
                          sample_rate=self.sample_rate, hop=self.hop, vq_strides=self.strides,
                          codebook_sizes=self.bundle.codebook_sizes, n_samples=int(n_samples),
                          token_tables_sha256=list(self.token_tables_sha256))

    def decode_to_file(self, tokens: TokensFile, path: str | Path, rate: int | None = None,
                       allow_other_bundle: bool = False) -> np.ndarray:
        """Decode ``tokens`` (checked against this bundle), trim to the original length, write ``path``."""
        tokens.check_bundle(self.fingerprint, self.word_table_sha256, self.strides,
                            None if allow_other_bundle else self.bundle_id, self.token_tables_sha256)
        pcm = self.decode(tokens.codes)[:tokens.n_samples]
        write_audio(path, pcm, self.sample_rate, rate or self.sample_rate)
        return pcm

    def new_stream(self) -> "CodecStream":
        from runtime.codec_stream import CodecStream

        return CodecStream(self)


if __name__ == "__main__":
    import sys

    from runtime.cli import run_cli
    from runtime.codec_cli import main

    sys.exit(run_cli(main))


def _table_sha256(ids: np.ndarray) -> str:
    """``sha256:<hex>`` of a token table as int64 little-endian (ties .tokens files to their tables)."""
    return "sha256:" + hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


def _inverse_table(ids: np.ndarray, vocab_size: int, layer: int) -> np.ndarray:
    """``(vocab_size,)`` int64: code of each LLM id in a layer's table, -1 where it has none."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise BundleError(f"layer-{layer} token table holds ids outside the LLM vocabulary 0..{vocab_size - 1}")
    if np.unique(ids).size != ids.size:
        raise BundleError(f"layer-{layer} token table repeats an id: codes and tokens must be a bijection")
    inv = np.full(vocab_size, -1, dtype=np.int64)
    inv[ids] = np.arange(ids.size)
    return inv
