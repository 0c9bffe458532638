"""GET /health: the runners' and the store's state in one report. Runners and store are passed in."""

from __future__ import annotations

import asyncio
from typing import Any

from api.errors import ApiError
from api.runner_calls import runner_info
from api.store_calls import StoreCalls


def summed(infos: list[dict[str, Any]], key: str) -> float | None:
    """The runners' GPU memory together; None when no runner reports any (CPU, or none loaded)."""
    values = [info[key] for info in infos if info.get(key) is not None]
    return sum(values) if values else None


async def health_report(clip: Any, vqa: Any, store: StoreCalls, model_id: str, vqa_model_id: str) -> dict[str, Any]:
    clip_info, vqa_info = await asyncio.gather(runner_info(clip), runner_info(vqa))
    info, described, read, size, state = None, {}, {}, None, "ok"
    try:
        info = await store.run(store.store.info)
        described = await store.run(store.store.described_counts)
        read = await store.run(store.store.read_counts)
        size = await store.run(store.store.count)
    except ApiError:  # the store's state is part of the report, not a reason to fail it
        pass
    if store.damaged:
        state = "damaged"
    elif size is None:
        state = "unavailable"
    return {
        "status": "healthy" if clip_info and vqa_info and state == "ok" else "degraded",
        # "ok"; "damaged" (searches refused, /readyz 503: python -m indexer --verify); "unavailable"
        "store": state,
        "clip_model_loaded": bool(clip_info),
        "vqa_model_loaded": bool(vqa_info),
        "image_library_size": size,
        "device": vqa_info.get("device") or clip_info.get("device"),
        "gpu_memory_allocated_gb": summed([clip_info, vqa_info], "gpu_memory_allocated_gb"),
        "gpu_memory_reserved_gb": summed([clip_info, vqa_info], "gpu_memory_reserved_gb"),
        "clip_model": model_id,
        "index_model": info.model_id if info else None,
        # `python -m indexer --describe`: photos with a description, and how many each describer wrote
        # ("<VQA model id>#<prompt hash>"; more than one while a changed model or prompt re-describes).
        "described_images": sum(described.values()),
        "descriptions_by": described,
        # `python -m indexer --ocr`: photos whose text was read (with or without any), per `ocr_by`.
        "read_images": sum(read.values()),
        "read_by": read,
        "vqa_model": vqa_model_id,
        "vqa_quantization": vqa_info.get("quantization"),
        # VQA_RUNTIME as resolved: "torch" or "openvino", and its weight precision ("fp32", "bf16", "int8", ...)
        "vqa_runtime": vqa_info.get("runtime"),
        "vqa_precision": vqa_info.get("precision"),
        # VQA_VISION_CACHE_MB / VQA_PREFIX_CACHE_MB: each follow-up cache's entries, bytes, limit, hits, misses
        "vqa_caches": vqa_info.get("caches"),
        "vqa_batches": {"generate_calls": vqa_info.get("generate_calls"), "answers": vqa_info.get("generated_items")},
    }
