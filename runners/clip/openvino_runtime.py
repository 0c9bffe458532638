"""CLIP on OpenVINO (CLIP_RUNTIME=openvino, openvino-bf16): both towers compiled for the CPU."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runners.clip.runtime import Runtime


class OpenVinoRuntime(Runtime):
    """Both towers as OpenVINO models compiled for the CPU. `openvino` pins the inference precision to f32:
    on a CPU with bf16 support OpenVINO's default is bf16, which moves rankings; `openvino-bf16` asks for it."""

    def __init__(self, name: str, folder: Path) -> None:
        import openvino as ov

        self.name = name
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if name == "openvino-bf16" else "f32"}
        self.image = core.compile_model(core.read_model(folder / "image.xml"), "CPU", config)
        self.text = core.compile_model(core.read_model(folder / "text.xml"), "CPU", config)
        self.text_inputs = [port.get_any_name() for port in self.text.inputs]

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.run(self.image, {"pixel_values": pixel_values.astype(np.float32)})

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.run(self.text, {name: tokens[name].astype(np.int64) for name in self.text_inputs})

    @staticmethod
    def run(compiled: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
        # One infer request per call: a request is not safe to share between threads, and it is cheap.
        result = compiled.create_infer_request().infer(feed)
        return np.array(result[compiled.output(0)], dtype=np.float32)

