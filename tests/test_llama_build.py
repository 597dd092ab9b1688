"""scripts.llama_build: which llama.cpp vector units a CPU's flags call for (never AMX)."""
from __future__ import annotations

from pathlib import Path

from scripts.llama_build import cmake_args, cpu_flags, has_units, wanted

ZEN4 = {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512vbmi", "avx512_vnni",
        "avx512_bf16", "amx_tile"}
INFO_PORTABLE = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 | "
INFO_AVX512 = INFO_PORTABLE + "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "


def test_avx512_units_follow_the_cpu_flags_and_never_amx():
    args = cmake_args(ZEN4)
    assert args.startswith("-DGGML_NATIVE=OFF") and "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_BF16=ON" in args
    assert "AMX" not in args
    assert not has_units(INFO_PORTABLE, ZEN4) and has_units(INFO_AVX512, ZEN4)
    # a partial AVX-512 CPU: the foundation without BF16 asks for no BF16
    no_bf16 = ZEN4 - {"avx512_bf16"}
    assert "BF16" not in cmake_args(no_bf16) and has_units(INFO_PORTABLE + "AVX512 = 1 | AVX512_VBMI = 1 | "
                                                           "AVX512_VNNI = 1 | ", no_bf16)
    # no AVX-512 foundation (a laptop with AVX2 only): the portable build, which already fits
    assert cmake_args({"avx2", "fma", "avx512_vnni"}) == "-DGGML_NATIVE=OFF"
    assert wanted({"avx2"}) == [] and has_units(INFO_PORTABLE, {"avx2"})


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(f) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == set()
