"""The one place a ClipEncoder is built from settings: the CLIP runner and the indexer get the same model on the
same runtime."""

from __future__ import annotations

from config import Settings, get_settings
from runners.clip.encoder import ClipEncoder, model_id_of
from runners.clip.fidelity import Bounds
from runners.hub import resolve_model


def open_clip(settings: Settings | None = None) -> ClipEncoder:
    """CLIP_MODEL, resolved as every model is, on the runtime CLIP_RUNTIME picks (runners/clip/select.py)."""
    settings = settings or get_settings()
    folder = resolve_model(settings.clip_model, settings.model_source, settings.model_cache_dir, "CLIP_MODEL")
    return ClipEncoder(str(folder), settings.device, model_id=model_id_of(settings.clip_model, folder),
                       runtime=settings.clip_runtime, runtime_cache=settings.clip_runtime_cache,
                       bounds=Bounds(min_top1=settings.clip_runtime_min_top1,
                                     min_cosine=settings.clip_runtime_min_cosine))
