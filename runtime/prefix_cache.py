"""On-disk cache of a demonstration prefix's KV state: instant start for every CLI.

Evaluating the instruction + demonstrations (500-1,500 tokens) takes seconds on a laptop CPU and
is the same for every run with the same demonstrations. `FrozenLM.eval_prefix` asks this cache
first: a file is keyed by the GGUF's sha256, the prefix ids, the llama-cpp-python version, n_ctx,
the KV type and the GPU offload, and it is never trusted blindly: after loading the state the
prefix's last token is evaluated again and its logits must equal the stored ones, bit for bit on
the CPU (the cold evaluation runs that token as a batch of its own too, so both take the same
kernels). A damaged, truncated or
mismatched file is rebuilt with a `PrefixCacheWarning`.

File: magic ``LLMCPFX\\0``, uint16 version, uint32 header length, JSON header (the key fields,
token count, payload sizes and sha256), the llama.cpp sequence state, then the logits (V,) float32.
Files live under ``$LLMCODEC_CACHE/prefix`` (default ``$XDG_CACHE_HOME/llmcodec-edge`` or
``~/.cache/llmcodec-edge``), one per key; nothing is written into the repository.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.bundle import sha256_file


__all__ = ["PrefixCache", "PrefixCacheWarning", "default_cache_dir", "model_sha256"]

MAGIC = b"LLMCPFX\0"
VERSION = 1
_HEAD = struct.Struct("<8sHI")


class PrefixCacheWarning(UserWarning):
    """A prefix-cache file could not be used (it is rebuilt) or written."""


def default_cache_dir() -> Path:
    """``$LLMCODEC_CACHE``, else ``$XDG_CACHE_HOME/llmcodec-edge``, else ``~/.cache/llmcodec-edge``."""
    if os.environ.get("LLMCODEC_CACHE"):
        return Path(os.environ["LLMCODEC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmcodec-edge"


def _sha256_file(path: Path) -> str:
    return sha256_file(path).removeprefix("sha256:")  # the project's one file hash (runtime/bundle.py)


def model_sha256(path: Path, root: Path | None = None) -> str:
    """sha256 of a GGUF, memoised in ``root/models.json`` by (real path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    index_path = (root or default_cache_dir()) / "models.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return str(entry["sha256"])
    digest = _sha256_file(path)
    index[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        _atomic_write(index_path, json.dumps(index, indent=1).encode())
    except OSError:
        pass  # a read-only cache dir only costs the hash next time
    return digest


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PrefixCache:
    """Prefix KV states on disk under ``root/prefix`` (``root`` default: `default_cache_dir`).

    Counters: ``hits``, ``misses`` (no file), ``rebuilt`` (a file was rejected and rebuilt)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "prefix"
        self.hits = self.misses = self.rebuilt = 0
        self._model_sha: dict[str, str] = {}

    def key(self, lm, ids: Sequence[int]) -> dict:
        """The fields a cached state must match: model, prompt ids, llama.cpp, context, KV layout."""
        from runtime.lm import llama_cpp_version

        path = str(lm.model_path)
        if path not in self._model_sha:
            self._model_sha[path] = model_sha256(lm.model_path, self.root)
        ids_bytes = np.asarray(ids, dtype=np.int64).tobytes()
        return {"model_sha256": self._model_sha[path], "ids_sha256": hashlib.sha256(ids_bytes).hexdigest(),
                "n_tokens": len(ids), "llama_cpp": llama_cpp_version(), "n_ctx": lm.n_ctx,
                "kv_type": lm.kv_type, "n_gpu_layers": lm.n_gpu_layers,
                "n_vocab": lm.n_vocab}

    def path_for(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.dir / f"{digest[:32]}.kv"

    def restore(self, lm, ids: list[int]) -> np.ndarray | None:
        """Load and verify the cached state of ``ids`` into ``lm``; its logits (V,), or None (cold)."""
        key = self.key(lm, ids)
        path = self.path_for(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            state, stored = _read(path, key, lm.n_vocab)
            lm.load_sequence_state(ids, state)
            got = lm.logits(ids)  # replays the prefix's last token(s) on the loaded cache
            _check_replay(got, stored, exact=lm.n_gpu_layers == 0)
        except (OSError, ValueError) as e:
            lm.reset()
            self.rebuilt += 1
            warnings.warn(f"prefix cache {path} not used, rebuilding it: {e}", PrefixCacheWarning, stacklevel=3)
            return None
        self.hits += 1
        return got

    def store(self, lm, ids: list[int], logits: np.ndarray) -> Path | None:
        """Write the state of ``ids`` (must be the LLM's cached sequence) with its logits."""
        if lm.cached_ids != list(ids):
            raise ValueError("store() needs the prefix to be the LLM's cached sequence")
        key = self.key(lm, ids)
        path = self.path_for(key)
        state = lm.sequence_state()
        row = np.asarray(logits, dtype="<f4").tobytes()
        header = json.dumps({**key, "state_bytes": len(state), "state_sha256": hashlib.sha256(state).hexdigest(),
                             "logits_sha256": hashlib.sha256(row).hexdigest()}).encode()
        try:
            _atomic_write(path, _HEAD.pack(MAGIC, VERSION, len(header)) + header + state + row)
        except OSError as e:
            warnings.warn(f"could not write the prefix cache {path}: {e}", PrefixCacheWarning, stacklevel=3)
            return None
        return path


def _read(path: Path, key: dict, n_vocab: int) -> tuple[bytes, np.ndarray]:
    """(state, logits) of a cache file whose header matches ``key``; ValueError otherwise."""
    data = path.read_bytes()
    if len(data) < _HEAD.size:
        raise ValueError("truncated file")
    magic, version, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version-{VERSION} prefix cache file")
    try:
        header = json.loads(data[_HEAD.size:_HEAD.size + hlen])
    except ValueError:
        raise ValueError("unreadable header") from None
    wrong = sorted(k for k in key if header.get(k) != key[k])
    if wrong:
        raise ValueError(f"made for another {', '.join(wrong)}")
    body = data[_HEAD.size + hlen:]
    n_state = int(header.get("state_bytes", -1))
    if len(body) != n_state + 4 * n_vocab:
        raise ValueError(f"payload has {len(body)} bytes, expected {n_state + 4 * n_vocab}")
    state, row = body[:n_state], body[n_state:]
    if hashlib.sha256(state).hexdigest() != header.get("state_sha256"):
        raise ValueError("state checksum mismatch")
    if hashlib.sha256(row).hexdigest() != header.get("logits_sha256"):
        raise ValueError("logits checksum mismatch")
    return state, np.frombuffer(row, dtype="<f4").astype(np.float32)


def _check_replay(got: np.ndarray, stored: np.ndarray, exact: bool) -> None:
    """The replayed logits must equal the stored ones: bit for bit on the CPU, where the replay runs
    the very kernels of the cold evaluation (`FrozenLM.eval_prefix`); GPU reductions may reorder."""
    diff = float(np.max(np.abs(got.astype(np.float64) - stored)))
    tol = 0.0 if exact else 1e-3 * (1.0 + float(np.max(np.abs(stored))))
    if not np.isfinite(diff) or diff > tol:
        raise ValueError(f"replaying the last token gave other logits (max |diff| {diff:.3g} > {tol:.3g})")
