"""Chinese-CLIP encoder: a plain class with no BentoML import (the indexer uses it directly;
runners/clip_service.py wraps it in the BentoML runner service)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from config import Settings, get_settings
from core.images import to_rgb
from runners.device import pick_device
from runners.hub import resolve_model

if TYPE_CHECKING:
    import torch


def features(output: Any) -> torch.Tensor:
    """transformers may return a tensor or an output object holding `pooler_output`."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output


class ClipEncoder:
    """Encodes images and texts to L2-normalised float32 vectors with ChineseCLIPModel."""

    def __init__(self, model_dir: str, device: str = "auto", model_id: str | None = None) -> None:
        import torch
        from transformers import AutoProcessor, ChineseCLIPModel

        self.device = pick_device(device)
        self.model_id = model_id or str(model_dir)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        model = ChineseCLIPModel.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.dim = int(self.model.config.projection_dim)
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ClipEncoder:
        settings = settings or get_settings()
        folder = resolve_model(
            settings.clip_model, settings.model_source, settings.model_cache_dir, "CLIP_MODEL"
        )
        return cls(str(folder), settings.device, model_id=model_id_of(settings.clip_model, folder))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        rgb = [img if img.mode == "RGB" else to_rgb(img) for img in images]
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = features(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.model.dtype)))
        return normalise(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.processor(
            text=list(texts), padding=True, truncation=True, max_length=min(self.max_text_tokens, 512),
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            out = features(self.model.get_text_features(**inputs))
        return normalise(out)


def model_id_of(model: str, folder: Path | None = None) -> str:
    """The id recorded with the vectors: the hub id, or the absolute folder of a local model."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model


def normalise(vectors: torch.Tensor) -> np.ndarray:
    array = vectors.float().cpu().numpy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(np.float32)
