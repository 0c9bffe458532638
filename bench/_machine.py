"""This machine as the benchmarks describe it: the CPU's name and the instruction sets a figure could use
(read from /proc/cpuinfo by runners/device.py, so a figure says what it was measured on, never what we assume)."""

from __future__ import annotations

from runners.device import cpu_flags, cpuinfo

WANTED = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def instruction_sets() -> str:
    flags = cpu_flags()
    return ", ".join(flag for flag in WANTED if flag in flags) or "none of AVX2/AVX-512/AMX"


def cpu_name() -> str:
    return cpuinfo("model name") or "unknown"
