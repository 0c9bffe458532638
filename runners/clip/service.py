"""The CLIP runner: a thin BentoML service around ClipEncoder (batching, readiness, telemetry only)."""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import numpy as np
from PIL import Image

from config import load_settings_or_exit
from core.bentoml_compat import runner_options
from core.telemetry import observe_batch
from runners.clip import ClipEncoder, open_clip
from runners.device import gpu_memory

log = logging.getLogger(__name__)
SETTINGS = load_settings_or_exit()  # a bad setting: one line naming it, exit 2


# Adaptive batching of concurrent calls (CLIP_ADAPTIVE_BATCHING=false turns it off, for comparison:
# bench/search_batching.py). The service always sends one-item lists, so both ways take the same calls.
BATCHING: dict[str, Any] = (
    {"batchable": True, "max_batch_size": SETTINGS.clip_max_batch_size, "max_latency_ms": SETTINGS.clip_max_latency_ms}
    if SETTINGS.clip_adaptive_batching else {})


@bentoml.service(name="clip_runner", **runner_options(SETTINGS.service_timeout_s))
class ClipRunner:
    """Adaptive-batching runner around ClipEncoder. Loads the model when the worker starts."""

    def __init__(self) -> None:
        self.encoder: ClipEncoder | None = None
        self.encoder = open_clip(SETTINGS)
        log.info("CLIP model %s loaded on %s", SETTINGS.clip_model, self.encoder.device)

    def __is_ready__(self) -> bool:
        return self.encoder is not None

    # Batched calls hold several requests: a text or image that cannot be encoded gets a NaN row (the
    # service answers its request 400) and the others the vectors they get alone (ClipEncoder).
    @bentoml.api(**BATCHING)
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        assert self.encoder is not None
        observe_batch("clip", "encode_texts", len(texts))
        return self.encoder.encode_texts(texts)

    @bentoml.api(**BATCHING)
    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        assert self.encoder is not None
        observe_batch("clip", "encode_images", len(images))
        return self.encoder.encode_images(images)

    @bentoml.api
    def info(self) -> dict:
        assert self.encoder is not None
        return {"model_id": self.encoder.model_id, "dim": self.encoder.dim, "device": self.encoder.device,
                **gpu_memory(self.encoder.device)}
