"""CLIP on PyTorch: the transformers model itself (CLIP_RUNTIME=torch), or under CPU bf16 autocast (torch-bf16)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from runners.clip.runtime import Runtime, features, to_numpy


class TorchRuntime(Runtime):
    """The transformers model itself: fp16 on CUDA, fp32 on CPU."""

    name = "torch"

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        pixels = torch.from_numpy(pixel_values).to(self.device, self.model.dtype)
        with torch.inference_mode():
            return to_numpy(features(self.model.get_image_features(pixel_values=pixels)))

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            return to_numpy(features(self.model.get_text_features(**inputs)))



class TorchBf16Runtime(TorchRuntime):
    """The fp32 transformers model on the CPU under bf16 autocast (matmuls in bf16, where the CPU has it)."""

    name = "torch-bf16"

    def __init__(self, model: Any) -> None:
        super().__init__(model, "cpu")

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().image_features(pixel_values)

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().text_features(tokens)

