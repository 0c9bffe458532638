"""Chinese-CLIP encoder: a plain class with no BentoML import (the indexer uses it directly;
runners/clip/service.py wraps it in the BentoML runner service). runners/clip/loader.py builds it from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.images import clip_view, to_rgb
from runners.clip.fidelity import Bounds
from runners.clip.runtime import features, unit
from runners.clip.select import Request, open_runtime
from runners.device import pick_device
from runners.isolation import batch_then_each

__all__ = ["ClipEncoder", "features", "model_id_of"]

log = logging.getLogger(__name__)

# Errors an input can cause (a processor or tokenizer refusing it). An item failing alone with one of
# these gets its own error; anything else (out of memory, a broken device) is the runner's trouble
# and propagates.
INPUT_ERRORS = (ArithmeticError, LookupError, OSError, TypeError, ValueError)


class ClipEncoder:
    """Encodes images and texts to L2-normalised float32 vectors with ChineseCLIPModel, through a runtime
    (runners/clip/select.py: PyTorch, or the same model exported to ONNX Runtime or OpenVINO)."""

    def __init__(self, model_dir: str, device: str = "auto", model_id: str | None = None,
                 runtime: str = "torch", runtime_cache: Path | None = None, bounds: Bounds | None = None) -> None:
        from transformers import AutoConfig, AutoProcessor

        self.model_dir = Path(model_dir)
        self.device = pick_device(device)
        self.model_id = model_id or str(model_dir)
        self.config: Any = AutoConfig.from_pretrained(model_dir)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.dim = int(self.config.projection_dim)
        self.max_text_tokens = int(self.config.text_config.max_position_embeddings)
        self._model: Any = None
        self.runtime = open_runtime(Request(
            choice=runtime, model_dir=self.model_dir, model_id=self.model_id, device=self.device,
            cache_dir=runtime_cache or Path("./data/clip-backends"), bounds=bounds or Bounds(),
            load_torch=lambda: self.model, load_reference=self._reference_model, processor=self.processor))
        self.device = self.runtime.device
        if self.runtime.name != "torch":
            self._model = None  # the export's reference model is not kept: the runtime holds the weights

    @property
    def model(self) -> Any:
        """The transformers model (fp16 on CUDA, fp32 on CPU), loaded at first use: an exported runtime
        needs it only to export."""
        if self._model is None:
            import torch
            from transformers import ChineseCLIPModel

            dtype = torch.float16 if self.device == "cuda" else torch.float32
            model = ChineseCLIPModel.from_pretrained(self.model_dir, dtype=dtype)
            self._model = model.to(self.device).eval()  # type: ignore[arg-type]
        return self._model

    def _reference_model(self) -> Any:
        """PyTorch fp32 on the CPU: what every runtime is compared with."""
        if self.device == "cpu":
            return self.model
        import torch
        from transformers import ChineseCLIPModel

        return ChineseCLIPModel.from_pretrained(self.model_dir, dtype=torch.float32).eval()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One unit vector a row; the row of an image that cannot be encoded is NaN (its reason logged)."""
        vectors, reasons = self.encode_images_each(images)
        log_failures("image", reasons)
        return vectors

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector a row; the row of a text that cannot be encoded is NaN (its reason logged)."""
        vectors, reasons = self.encode_texts_each(texts)
        log_failures("text", reasons)
        return vectors

    def encode_images_each(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, list[str | None]]:
        """The vectors, and for each image None or why it could not be encoded (its row is NaN)."""
        return encode_isolated(self.image_batch, list(images), self.dim)

    def encode_texts_each(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
        return encode_isolated(self.text_batch, list(texts), self.dim)

    def image_batch(self, images: list[Image.Image]) -> np.ndarray:
        # clip_view bounds what the processor's resize costs, whatever the image's shape.
        views = [clip_view(img if img.mode == "RGB" else to_rgb(img)) for img in images]
        pixels = self.processor(images=views, return_tensors="np")["pixel_values"]
        return unit(self.runtime.image_features(pixels))

    def text_batch(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor(
            text=texts, padding=True, truncation=True, max_length=min(self.max_text_tokens, 512),
            return_tensors="np",
        )
        return unit(self.runtime.text_features(dict(tokens)))


def encode_isolated(
    encode: Callable[[list], np.ndarray], items: list, dim: int
) -> tuple[np.ndarray, list[str | None]]:
    """Encode `items` in one call; if that call fails, each item alone (runners/isolation.py), so an item that
    fails gets a NaN row and its reason while every other item gets the vector it gets alone. Only INPUT_ERRORS
    are an item's own; any other error of an item alone propagates."""
    if not items:
        return np.zeros((0, dim), dtype=np.float32), []

    def run(batch: list) -> list[tuple[np.ndarray, str | None]]:
        return [(row, None) for row in encode(batch)]

    def failed(_: object, exc: Exception) -> tuple[np.ndarray, str | None]:
        if not isinstance(exc, INPUT_ERRORS):
            raise exc
        return np.full(dim, np.nan, dtype=np.float32), f"{type(exc).__name__}: {exc}"[:300]

    rows = batch_then_each(run, items, failed)
    return np.stack([row for row, _ in rows]).astype(np.float32), [reason for _, reason in rows]


def log_failures(kind: str, reasons: list[str | None]) -> None:
    for index, reason in enumerate(reasons):
        if reason is not None:
            log.warning("CLIP could not encode %s %d of a batch of %d: %s", kind, index, len(reasons), reason)


def model_id_of(model: str, folder: Path | None = None) -> str:
    """The id recorded with the vectors: the hub id, or the absolute folder of a local model."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model

