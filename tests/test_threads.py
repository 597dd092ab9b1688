"""runtime.threads: llama.cpp's OpenMP wait policy, chosen before OpenMP starts, never over a user's."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.threads import choose_wait_policy, idle_cores

ROOT = Path(__file__).resolve().parents[1]


def test_policy_follows_the_flag_and_the_idle_cores():
    assert choose_wait_policy("on", 2, None) == "active" and choose_wait_policy("off", 2, 2.0) == "passive"
    assert choose_wait_policy("auto", 2, 1.95) == "active"   # both cores idle: spin
    assert choose_wait_policy("auto", 2, 1.0) == "passive"   # one core busy elsewhere: sleep
    assert choose_wait_policy("auto", 1, 0.9) == "active"
    assert choose_wait_policy("auto", 2, None) == "passive"  # unknown load: the safe choice
    with pytest.raises(ValueError):
        choose_wait_policy("maybe", 2, 2.0)


def test_idle_cores_reads_proc_stat(tmp_path: Path):
    f = tmp_path / "stat"
    f.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n")
    assert idle_cores(0.0, f) is None  # no time passed between the samples
    assert idle_cores(0.0, tmp_path / "missing") is None
    n = idle_cores(0.05)  # the real machine
    assert n is None or 0.0 <= n <= (os.cpu_count() or 1) + 1e-6


def _policy(env: dict, spin: str) -> str:
    code = ("import os, runtime.threads as t; p = t.apply_wait_policy(%r, 1); "
            "print(p, os.environ['OMP_WAIT_POLICY'])" % spin)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_apply_sets_the_policy_before_openmp_and_keeps_a_users():
    assert _policy({}, "on") == "active active"
    assert _policy({}, "off") == "passive passive"
    assert _policy({"OMP_WAIT_POLICY": "passive"}, "on") == "passive passive"  # exported by the user
    code = ("import os, llama_cpp, runtime.threads as t; print(t.openmp_started(), t.apply_wait_policy('on', 1))")
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    if out[0] == "True":  # libgomp already running: too late to change, and it says so
        assert out[1] == "None"
