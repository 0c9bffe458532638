"""Device choice, GPU memory and what this CPU computes in hardware, shared by the runners (no BentoML here)."""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # elsewhere PyTorch and OpenVINO emulate bf16, slowly


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but no CUDA device is available; use DEVICE=auto or cpu")
    return device


def gpu_memory(device: str) -> dict[str, float | None]:
    """GPU memory this process holds, in GiB (None on CPU)."""
    if device != "cuda":
        return {"gpu_memory_allocated_gb": None, "gpu_memory_reserved_gb": None}
    import torch

    gib = 1024**3
    return {"gpu_memory_allocated_gb": round(torch.cuda.memory_allocated() / gib, 3),
            "gpu_memory_reserved_gb": round(torch.cuda.memory_reserved() / gib, 3)}


def cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo (None when absent or unreadable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (empty when /proc/cpuinfo cannot be read)."""
    return set((cpuinfo("flags") or "").split())


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512 BF16): the one check every runtime uses."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)
