"""Device choice and GPU memory, shared by the runners (no BentoML here)."""

from __future__ import annotations


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
