"""The seam every CLIP runtime plugs into: raw CLIP features from the processor's outputs as numpy arrays.

The variants, a file each: torch_runtime.py (PyTorch, and PyTorch under CPU bf16 autocast), onnx_runtime.py (ONNX
Runtime, fp32 or int8), openvino_runtime.py (OpenVINO, f32 or bf16). select.py picks one (CLIP_RUNTIME).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class Runtime:
    """Raw (not normalised) CLIP features from processor outputs as numpy arrays."""

    name = "base"
    device = "cpu"

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


def features(output: Any) -> torch.Tensor:
    """transformers may return a tensor or an output object holding `pooler_output`."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output



def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor.float().cpu().numpy(), dtype=np.float32)



def unit(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    return (array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)).astype(np.float32)

