"""CLIP's exports: both towers to ONNX (dynamic batch and text length), quantised for onnx-int8 or converted to
OpenVINO IR; cached per model in CLIP_RUNTIME_CACHE (runners/export_cache.py keys, stages and publishes them)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from runners import export_cache
from runners.clip.fidelity import probe_inputs
from runners.clip.runtime import features

ONNX_OPSET = 17

EXPORT_FORMAT = 1  # bump when the export layout or probe set changes: old cache folders are not reused



def export_onnx(model: Any, processor: Any, folder: Path) -> None:
    """Both towers with dynamic batch (and text length) axes, by the TorchScript-based exporter (the
    dynamo one needs onnxscript). The wrappers are put in eval mode: the exporter restores the wrapper's
    own mode afterwards, which would otherwise switch the model's dropout on."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return features(self.model.get_image_features(pixel_values=pixel_values))

    class TextTower(torch.nn.Module):
        def __init__(self, names: list[str]) -> None:
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
            return features(self.model.get_text_features(**dict(zip(self.names, tokens, strict=True))))

    images, tokens = probe_inputs(processor)
    names = list(tokens)
    pixels = torch.from_numpy(images[:2])
    sample = tuple(torch.from_numpy(tokens[n][:2]) for n in names)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer and deprecation warnings, at every export
        torch.onnx.export(
            ImageTower().eval(), (pixels,), str(folder / "image.onnx"), input_names=["pixel_values"],
            output_names=["features"], dynamic_axes={"pixel_values": {0: "batch"}, "features": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False)
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
        torch.onnx.export(
            TextTower(names).eval(), sample, str(folder / "text.onnx"), input_names=names,
            output_names=["features"], dynamic_axes={**axes, "features": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False)



def quantise(folder: Path) -> None:
    """Dynamic int8 (weights int8, activations quantised per call), MatMuls only: they are nearly all the
    time, while quantising the embedding tables (Gather) only moves the vectors further for no speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for tower in ("image", "text"):
        source, target = folder / f"{tower}.onnx", folder / f"{tower}.int8.onnx"
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        os.replace(target, source)



def to_openvino(folder: Path, compress: bool) -> None:
    """The ONNX towers as OpenVINO IR (xml + bin), read by the runtime's ONNX reader. fp32 weights stay fp32
    (save_model would halve them to fp16 by default, which moves fp32 results); the bf16 runtime computes in
    bf16 anyway, so its weights are stored as fp16 (half the disk)."""
    import openvino as ov

    core = ov.Core()
    for tower in ("image", "text"):
        source = folder / f"{tower}.onnx"
        ov.save_model(core.read_model(source), folder / f"{tower}.xml", compress_to_fp16=compress)
        source.unlink()



def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "openvino"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found



def cache_folder(cache_dir: Path, model_id: str, model_dir: Path) -> Path:
    """<cache>/<readable model id>-<hash of model id, export format and every model file's bytes>."""
    return export_cache.cache_folder(cache_dir, model_id, model_dir, str(EXPORT_FORMAT))



def model_hash(model_id: str, model_dir: Path) -> str:
    return export_cache.model_hash(model_id, model_dir, str(EXPORT_FORMAT))

