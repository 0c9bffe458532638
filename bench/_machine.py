"""This machine as the benchmarks describe it: the CPU's name and the instruction sets a figure could use
(read from /proc/cpuinfo, so a figure says what it was measured on, never what we assume)."""

from __future__ import annotations

from pathlib import Path

WANTED = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo (None when absent)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return None


def instruction_sets() -> str:
    flags = set((cpuinfo("flags") or "").split())
    return ", ".join(flag for flag in WANTED if flag in flags) or "none of AVX2/AVX-512/AMX"


def cpu_name() -> str:
    return cpuinfo("model name") or "unknown"
