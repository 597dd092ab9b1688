"""Install llama-cpp-python built for this machine's x86 vector units, never for AMX.

llama.cpp's portable build (``-DGGML_NATIVE=OFF``) stops at AVX2; the native build detects
Intel AMX on these CPUs and crashes on quantised models (SIGILL). This script asks for the
AVX-512 family the CPU really reports in ``/proc/cpuinfo`` (AVX512F/BW/DQ/VL/CD, VBMI, VNNI,
BF16) on top of the portable set, and never AMX. Measured on this project's 2-core EPYC with
Gemma 3 270M: the query prefill is ~21 % faster and a 9-token verification batch ~10 %
(README "Draft decoding"). A CPU without AVX-512 gets the portable build unchanged.

The wheel is built once per (version, flag set) into ``--wheels`` and reused from there (pip's
own cache ignores CMAKE_ARGS and would hand back a wheel built with other flags). A wheel built
here runs only on CPUs with the same units: build it on the machine that runs it.

CLI (run with the project's venv python, `make` does):
``python -m scripts.llama_build flags``   print the CMAKE_ARGS for this CPU
``python -m scripts.llama_build check``   exit 1 unless the installed build has them
``python -m scripts.llama_build install [--wheels DIR]``  build (once) and install if check fails
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

PORTABLE = ("-DGGML_NATIVE=OFF",)
# (cmake option, /proc/cpuinfo flags it needs, llama_print_system_info name)
AVX512_OPTIONS = (
    ("GGML_AVX512", ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"), "AVX512"),
    ("GGML_AVX512_VBMI", ("avx512vbmi",), "AVX512_VBMI"),
    ("GGML_AVX512_VNNI", ("avx512_vnni",), "AVX512_VNNI"),
    ("GGML_AVX512_BF16", ("avx512_bf16",), "AVX512_BF16"),
)
# Named explicitly (they are the portable build's defaults), so the flag set states all a wheel needs.
BASE_OPTIONS = ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")
DEFAULT_WHEELS = Path.home() / ".cache" / "llmcodec" / "llama-wheels"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (empty where /proc/cpuinfo is missing: not Linux x86)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def wanted(flags: set[str]) -> list[tuple[str, str]]:
    """(cmake option, system-info name) of every AVX-512 option the CPU supports."""
    if not all(f in flags for f in AVX512_OPTIONS[0][1]):
        return []
    return [(opt, name) for opt, need, name in AVX512_OPTIONS if all(f in flags for f in need)]


def cmake_args(flags: set[str]) -> str:
    """CMAKE_ARGS for this CPU: the portable build, plus its AVX-512 units when it has them."""
    extra = wanted(flags)
    if not extra:
        return " ".join(PORTABLE)
    return " ".join([*PORTABLE, *(f"-D{o}=ON" for o in BASE_OPTIONS), *(f"-D{o}=ON" for o, _ in extra)])


def installed_info() -> tuple[str, str] | None:
    """(version, llama_print_system_info) of the installed llama-cpp-python, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return str(llama_cpp.__version__), llama_cpp.llama_print_system_info().decode(errors="replace")


def has_units(system_info: str, flags: set[str]) -> bool:
    """Whether a build's system info lists every AVX-512 unit this CPU calls for."""
    return all(f" {name} = 1 " in f" {system_info} " for _, name in wanted(flags))


def install(wheels: Path, flags: set[str]) -> int:
    info = installed_info()
    if info is not None and has_units(info[1], flags):
        print(f"llama-cpp-python {info[0]} already has this CPU's vector units")
        return 0
    version = info[0] if info is not None else None
    args = cmake_args(flags)
    spec = f"llama-cpp-python=={version}" if version else "llama-cpp-python>=0.3"
    tag = hashlib.sha1(f"{spec} {args}".encode()).hexdigest()[:12]
    folder = wheels / tag
    found = sorted(folder.glob("llama_cpp_python-*.whl"))
    pip = [sys.executable, "-m", "pip"]
    if not found:
        print(f"building {spec} with CMAKE_ARGS='{args}' (about 10 min on one core) into {folder}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CMAKE_ARGS": args}
        subprocess.run([*pip, "wheel", "-q", "--no-cache-dir", "--no-deps", "--no-binary", "llama-cpp-python",
                        "-w", str(folder), spec], check=True, env=env)
        found = sorted(folder.glob("llama_cpp_python-*.whl"))
    subprocess.run([*pip, "install", "-q", "--no-deps", "--force-reinstall", str(found[-1])], check=True)
    print(f"installed {found[-1].name} ({args})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("action", choices=("flags", "check", "install"))
    ap.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="where built wheels are kept")
    a = ap.parse_args(argv)
    flags = cpu_flags()
    if a.action == "flags":
        print(cmake_args(flags))
        return 0
    if a.action == "check":
        info = installed_info()
        ok = info is not None and has_units(info[1], flags)
        print("ok" if ok else f"llama-cpp-python lacks this CPU's units: {[n for _, n in wanted(flags)]}")
        return 0 if ok else 1
    try:
        return install(a.wheels, flags)
    except subprocess.CalledProcessError as e:
        print(f"error: building llama-cpp-python failed ({e}); the installed build is unchanged", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
