"""Chinese-CLIP encoder: a plain class with no BentoML import (the indexer uses it directly;
runners/clip_service.py wraps it in the BentoML runner service)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from config import Settings, get_settings
from core.images import to_rgb
from runners.clip_backends import Bounds, Request, features, open_backend, unit
from runners.device import pick_device
from runners.hub import resolve_model

__all__ = ["ClipEncoder", "features", "model_id_of"]


class ClipEncoder:
    """Encodes images and texts to L2-normalised float32 vectors with ChineseCLIPModel, through a backend
    (runners/clip_backends.py: PyTorch, or the same model exported to ONNX Runtime)."""

    def __init__(self, model_dir: str, device: str = "auto", model_id: str | None = None,
                 backend: str = "torch", backend_cache: Path | None = None, bounds: Bounds | None = None) -> None:
        from transformers import AutoConfig, AutoProcessor

        self.model_dir = Path(model_dir)
        self.device = pick_device(device)
        self.model_id = model_id or str(model_dir)
        self.config: Any = AutoConfig.from_pretrained(model_dir)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.dim = int(self.config.projection_dim)
        self.max_text_tokens = int(self.config.text_config.max_position_embeddings)
        self._model: Any = None
        self.backend = open_backend(Request(
            choice=backend, model_dir=self.model_dir, model_id=self.model_id, device=self.device,
            cache_dir=backend_cache or Path("./data/clip-backends"), bounds=bounds or Bounds(),
            load_torch=lambda: self.model, load_reference=self._reference_model, processor=self.processor))
        self.device = self.backend.device
        if self.backend.name != "torch":
            self._model = None  # the export's reference model is not kept: the backend holds the weights

    @property
    def model(self) -> Any:
        """The transformers model (fp16 on CUDA, fp32 on CPU), loaded at first use: an ONNX backend
        needs it only to export."""
        if self._model is None:
            import torch
            from transformers import ChineseCLIPModel

            dtype = torch.float16 if self.device == "cuda" else torch.float32
            model = ChineseCLIPModel.from_pretrained(self.model_dir, dtype=dtype)
            self._model = model.to(self.device).eval()  # type: ignore[arg-type]
        return self._model

    def _reference_model(self) -> Any:
        """PyTorch fp32 on the CPU: what every backend is compared with."""
        if self.device == "cpu":
            return self.model
        import torch
        from transformers import ChineseCLIPModel

        return ChineseCLIPModel.from_pretrained(self.model_dir, dtype=torch.float32).eval()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ClipEncoder:
        """The encoder the CLIP runner and the indexer both use: same model, same backend."""
        settings = settings or get_settings()
        folder = resolve_model(
            settings.clip_model, settings.model_source, settings.model_cache_dir, "CLIP_MODEL"
        )
        return cls(str(folder), settings.device, model_id=model_id_of(settings.clip_model, folder),
                   backend=settings.clip_backend, backend_cache=settings.clip_backend_cache,
                   bounds=Bounds(min_top1=settings.clip_backend_min_top1,
                                 min_cosine=settings.clip_backend_min_cosine))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        rgb = [img if img.mode == "RGB" else to_rgb(img) for img in images]
        pixels = self.processor(images=rgb, return_tensors="np")["pixel_values"]
        return unit(self.backend.image_features(pixels))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.processor(
            text=list(texts), padding=True, truncation=True, max_length=min(self.max_text_tokens, 512),
            return_tensors="np",
        )
        return unit(self.backend.text_features(dict(tokens)))


def model_id_of(model: str, folder: Path | None = None) -> str:
    """The id recorded with the vectors: the hub id, or the absolute folder of a local model."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model

