"""The memory guard: before a model loads, its estimated need against the memory this process may use.

Available memory is the smaller of the kernel's MemAvailable and what the process's cgroup (a container's
memory limit) still allows. A need over it stops start-up with a message naming both and the settings that
help, instead of the kernel's OOM killer ending the process half-way through loading.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

GIB = 1024**3
# What a runtime holds beside its weights: allocator pools, the tokenizer, the Python process (measured with
# the real Qwen2.5-VL-3B architecture on this project's CPU box: runtime peak minus weights, less activations).
RUNTIME_OVERHEAD = int(0.6 * GIB)
ACTIVATION_BYTES = 320
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.55, "int4": 0.55}
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                           "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class NotEnoughMemory(RuntimeError):
    """The model will not fit: the message names the need, the available memory and what helps."""


def available_bytes() -> int:
    """MemAvailable, or less when this process's cgroup allows less."""
    found = [meminfo_available()]
    limit = cgroup_room()
    if limit is not None:
        found.append(limit)
    return min(found)


def meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # not Linux: nothing to go by


def cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2 memory.max, or v1 memory.limit_in_bytes)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: mounted at /sys/fs/cgroup, or at its unified/ beside v1 (hybrid)
            found = [room_in(base / "memory.max", base / "memory.current")
                     for base in (Path("/sys/fs/cgroup") / path.lstrip("/"), Path("/sys/fs/cgroup/unified") /
                                  path.lstrip("/"))]
            room = min((r for r in found if r is not None), default=None)
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            room = room_in(base / "memory.limit_in_bytes", base / "memory.usage_in_bytes")
        else:
            continue
        if room is not None:
            return room
    return None


def room_in(limit_file: Path, usage_file: Path) -> int | None:
    try:
        limit = limit_file.read_text().strip()
        usage = int(usage_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number)
        return None
    return max(0, int(limit) - usage)


def parameter_count(model_dir: Path) -> int:
    """Parameters in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= int(dim)
                total += count
    return total


def activation_bytes(model_dir: Path, max_pixels: int) -> int:
    """The transient memory of a 1-image prefill: linear in the image's patches and the vision tower's width
    (attention runs in blocks, so no patches x patches matrix is held), ACTIVATION_BYTES per patch and unit of
    width, calibrated with the real Qwen2.5-VL-3B at a 1-MP photo (bench/vlm_cpu.py)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    vision = config.get("vision_config", {})
    patch = int(vision.get("patch_size", 14))
    width = int(vision.get("hidden_size", 1280))
    return (max_pixels // (patch * patch)) * width * ACTIVATION_BYTES


def torch_need(model_dir: Path, precision: str, max_pixels: int) -> int:
    weights = int(parameter_count(model_dir) * BYTES_PER_PARAM[precision])
    return weights + activation_bytes(model_dir, max_pixels) + RUNTIME_OVERHEAD


def openvino_need(export_dir: Path, model_dir: Path, max_pixels: int, kv_cache_bytes: int) -> int:
    """The export's weight files (read into memory as they are), the KV cache GenAI allocates, activations."""
    weights = sum(path.stat().st_size for path in Path(export_dir).glob("*.bin"))
    return weights + kv_cache_bytes + activation_bytes(model_dir, max_pixels) + RUNTIME_OVERHEAD


def check_fits(what: str, need: int, helps: str) -> None:
    """Raise NotEnoughMemory when `need` is over the available memory."""
    room = available_bytes()
    if need > room:
        raise NotEnoughMemory(
            f"{what} needs about {need / GIB:.1f} GiB of memory but {room / GIB:.1f} GiB is available: {helps} "
            "(VQA_MEMORY_GUARD=false loads anyway, at the risk of the kernel killing the process)")
