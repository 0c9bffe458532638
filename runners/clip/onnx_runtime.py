"""CLIP on ONNX Runtime (CLIP_RUNTIME=onnx, onnx-int8): both towers as sessions on the CPU."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from runners.clip.runtime import Runtime


class OnnxRuntime(Runtime):
    """Both towers as ONNX Runtime sessions on the CPU (fp32 export or its dynamic int8 quantisation)."""

    def __init__(self, name: str, folder: Path) -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.image = ort.InferenceSession(str(folder / "image.onnx"), options, providers=providers)
        self.text = ort.InferenceSession(str(folder / "text.onnx"), options, providers=providers)
        self.text_inputs = [i.name for i in self.text.get_inputs()]

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        return np.asarray(self.image.run(None, {"pixel_values": pixel_values.astype(np.float32)})[0])

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {name: tokens[name].astype(np.int64) for name in self.text_inputs}
        return np.asarray(self.text.run(None, feed)[0])

