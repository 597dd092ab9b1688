"""The one place the thread environment is set: import this module before numpy / llama.cpp load.

llama.cpp and onnxruntime bring their own threads. OpenBLAS threads on top (the numpy codeword
search) oversubscribe the cores (measured up to 70x slower, kernels/cpu.py): one OpenBLAS thread.

llama.cpp's OpenMP workers meet at a barrier after every operation of a forward pass, so how
they wait (``OMP_WAIT_POLICY``) decides its speed. Spinning ("active") is fastest on cores the
LLM has to itself, but where another program competes for them a spinning worker holds a core
its partner needs, and each barrier then costs a scheduler time slice: measured on the 2-core
EPYC, denoising 9 s of audio did not finish within 300 s beside a 1-thread training with spinning
workers, and took 9 s with sleeping ("passive") ones. Sleeping costs every barrier a futex wake-up instead: on the
idle machine the live stream's denoise real-time factor is 0.81 passive against 0.60 active
(README "Threads"). So the policy is chosen when the LLM loads (`choose_wait_policy`, ``--spin``):
spinning when enough cores are idle for its threads, sleeping otherwise. It is applied only
before OpenMP starts (libgomp reads it once) and never overrides a user's own setting.

    import runtime.threads  # noqa: F401  (first import of a CLI entry point)
"""
from __future__ import annotations

import os
import time
from pathlib import Path

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # a user's own setting always wins


def configure() -> dict[str, str]:
    """Set the defaults of ``THREAD_ENV`` that are not already set; returns the effective values."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in THREAD_ENV}


def idle_cores(seconds: float = 0.2, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores idle over the next ``seconds`` (from /proc/stat), or None where it cannot be read."""

    def sample() -> tuple[int, int]:
        f = [int(x) for x in stat.read_text().splitlines()[0].split()[1:]]
        return sum(f[:8]), f[3] + f[4]  # total (without guest time, counted in user), idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    n = os.cpu_count() or 1
    return n * (i1 - i0) / (t1 - t0) if t1 > t0 else None


def choose_wait_policy(spin: str, threads: int, idle: float | None) -> str:
    """"active" or "passive" for ``spin`` ("on", "off", "auto") with ``threads`` LLM threads and
    ``idle`` idle cores (None: unknown, which "auto" treats as busy)."""
    if spin not in ("auto", "on", "off"):
        raise ValueError(f"spin must be auto, on or off, got {spin!r}")
    if spin != "auto":
        return "active" if spin == "on" else "passive"
    return "active" if idle is not None and idle >= threads - 0.25 else "passive"


def openmp_started() -> bool:
    """Whether libgomp is already loaded in this process (its wait policy is then fixed)."""
    try:
        return "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def apply_wait_policy(spin: str, threads: int | None) -> str | None:
    """Set ``OMP_WAIT_POLICY`` for an LLM about to load with ``threads`` threads (None: all cores);
    returns the policy in force, or None where it can no longer change (OpenMP already running).
    A policy the user exported is kept."""
    if USER_WAIT_POLICY is not None:
        return USER_WAIT_POLICY
    if openmp_started():
        return None
    n = threads or os.cpu_count() or 1
    policy = choose_wait_policy(spin, n, idle_cores() if spin == "auto" else None)
    os.environ["OMP_WAIT_POLICY"] = policy
    return policy


configure()
