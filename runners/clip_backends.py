"""CLIP encoding backends: PyTorch, or the same ChineseCLIPModel exported to ONNX and run by OpenVINO (fp32
or bf16) or ONNX Runtime (fp32 or int8), or PyTorch under CPU bf16 autocast.

`CLIP_BACKEND=auto` (the default) runs PyTorch on CUDA and, on CPU, the fastest installed backend that is
faithful (fp32 OpenVINO, else fp32 ONNX Runtime: the same rankings as PyTorch fp32); low-precision backends
(openvino-bf16, torch-bf16, onnx-int8) are opt-in. A backend is never trusted blindly: when it is built
(export) and every time it is loaded, it encodes a fixed probe set (synthetic images and texts) and its
vectors are compared with PyTorch fp32's on the user's own model (stored with the export). The agreement
is logged, and a backend whose probe rankings move past the bound (CLIP_BACKEND_MIN_TOP1 /
CLIP_BACKEND_MIN_COSINE) is refused: an error at start-up for an explicit choice, PyTorch with a warning
for `auto`.

Exports live in CLIP_BACKEND_CACHE/<model>-<hash of the model files>/<backend>/ and are written atomically
(a temporary folder renamed), so an interrupted export or two processes exporting at once (the indexer and
the CLIP runner) never leave a half-written model behind. Nothing is downloaded: the export is made from the
local model folder with the installed torch and onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from runners import export_cache
from runners.export_cache import publish

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHOICES = ("auto", "torch", "openvino", "onnx", "openvino-bf16", "torch-bf16", "onnx-int8")
FAITHFUL = ("openvino", "onnx")  # auto's CPU candidates, fastest first: fp32, the same rankings as PyTorch fp32
LOW_PRECISION = ("openvino-bf16", "torch-bf16", "onnx-int8")  # opt-in only
NEEDS = {"onnx": ("onnxruntime", "onnx"), "onnx-int8": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"),
         "openvino-bf16": ("openvino", "onnx")}  # the packages each backend (and its export) imports
ONNX_OPSET = 17
EXPORT_FORMAT = 1  # bump when the export layout or probe set changes: old cache folders are not reused

PROBE_TEXTS = (
    "红色的圆形", "一只猫", "蓝色的天空", "绿色的正方形", "夜晚的城市", "海边的日落",
    "a photo of a dog", "a yellow triangle", "a bowl of noodles", "black and white stripes",
)
PROBE_IMAGES = 16


class BackendRefused(RuntimeError):
    """A backend that cannot load or export the model, or whose probe rankings move past the bound."""


@dataclass(frozen=True)
class Bounds:
    """The least agreement with PyTorch fp32 a backend must show on the probe set."""

    min_top1: float = 0.9  # share of probe queries whose top-1 result equals PyTorch fp32's
    min_cosine: float = 0.99  # the lowest cosine of any probe vector with PyTorch fp32's

    def faithful(self) -> Bounds:
        """What `auto` demands: identical probe rankings, whatever the bound set for an explicit choice."""
        return Bounds(min_top1=1.0, min_cosine=self.min_cosine)


@dataclass(frozen=True)
class Fidelity:
    """How a backend's probe vectors compare with PyTorch fp32's."""

    min_cosine: float
    top1_agreement: float
    queries: int

    def passes(self, bounds: Bounds) -> bool:
        return self.min_cosine >= bounds.min_cosine and self.top1_agreement >= bounds.min_top1

    def describe(self) -> str:
        return (f"top-1 agreement {self.top1_agreement:.1%} over {self.queries} probe queries, "
                f"lowest cosine {self.min_cosine:.10g}")


@dataclass(frozen=True)
class Vectors:
    images: np.ndarray
    texts: np.ndarray


# ---------------------------------------------------------------- backends


class Backend:
    """Raw (not normalised) CLIP features from processor outputs as numpy arrays."""

    name = "base"
    device = "cpu"

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def text_features(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(Backend):
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


class OnnxBackend(Backend):
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


class OpenVinoBackend(Backend):
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


class TorchBf16Backend(TorchBackend):
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


def features(output: Any) -> torch.Tensor:
    """transformers may return a tensor or an output object holding `pooler_output`."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor.float().cpu().numpy(), dtype=np.float32)


def installed(choice: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in NEEDS.get(choice, ()))


# ---------------------------------------------------------------- choosing one


@dataclass
class Request:
    """What `open_backend` needs: the model, where exports go, the bounds, and a way to load PyTorch."""

    choice: str  # one of CHOICES
    model_dir: Path
    model_id: str
    device: str  # resolved: "cpu" or "cuda"
    cache_dir: Path
    bounds: Bounds
    load_torch: Callable[[], Any]  # the fp32/fp16 transformers model on `device`, loaded once
    load_reference: Callable[[], Any]  # an fp32 CPU transformers model (the export and probe reference)
    processor: Any


def open_backend(request: Request) -> Backend:
    """The backend `request.choice` names (see the module docstring for `auto`)."""
    if request.choice not in CHOICES:
        raise BackendRefused(f"CLIP_BACKEND={request.choice!r} is not one of {', '.join(CHOICES)}")
    if request.choice == "torch" or (request.choice == "auto" and request.device == "cuda"):
        return TorchBackend(request.load_torch(), request.device)
    if request.choice != "auto":
        return exported(request, request.choice, request.bounds)
    for name in FAITHFUL:
        if not installed(name):
            continue
        try:
            return exported(request, name, request.bounds.faithful())
        except BackendRefused as exc:
            log.warning("CLIP_BACKEND=auto: %s; falling back to PyTorch (CLIP_BACKEND=torch)", exc)
    return TorchBackend(request.load_torch(), request.device)


def exported(request: Request, name: str, bounds: Bounds) -> Backend:
    """An exported backend (or torch-bf16, whose folder holds only its reference) from the cache (exported
    first when missing; re-exported once when the cached copy does not load or no longer matches its stored
    reference), checked against `bounds`."""
    refuse = f"CLIP_BACKEND={name} refused for {request.model_id}"
    fallback = "set CLIP_BACKEND=torch (or auto) to fall back to PyTorch"
    if not installed(name):
        raise BackendRefused(f"{refuse}: {'/'.join(NEEDS[name])} not installed; {fallback}")
    if request.device == "cuda":
        log.warning("CLIP_BACKEND=%s runs on the CPU (only PyTorch uses CUDA here)", name)
    folder = cache_folder(request.cache_dir, request.model_id, request.model_dir) / name
    fresh = False
    if not (folder / "export.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)  # whatever is there is not a finished export
        build(request, name, folder)
        fresh = True
    try:
        backend, fidelity = load_checked(name, folder, request)
    except Exception as exc:  # noqa: BLE001 - any failure to load a cached export means: build it again
        if fresh:
            raise BackendRefused(f"{refuse}: the export does not load ({exc}); {fallback}") from exc
        log.warning("CLIP backend cache %s does not load (%s): exporting again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return exported(request, name, bounds)
    if not fidelity.passes(bounds) and not fresh:
        # A cached copy that loads but drifted from its reference (damaged file): rebuild it once.
        log.warning("CLIP backend cache %s: %s; exporting again", folder, fidelity.describe())
        shutil.rmtree(folder, ignore_errors=True)
        return exported(request, name, bounds)
    log.info("CLIP_BACKEND=%s vs PyTorch fp32 on %s: %s", name, request.model_id, fidelity.describe())
    if not fidelity.passes(bounds):
        raise BackendRefused(
            f"{refuse}: {fidelity.describe()} vs PyTorch fp32, past the bound (CLIP_BACKEND_MIN_TOP1="
            f"{bounds.min_top1}, CLIP_BACKEND_MIN_COSINE={bounds.min_cosine}); {fallback}, "
            "or loosen the bound")
    return backend


def load_checked(name: str, folder: Path, request: Request) -> tuple[Backend, Fidelity]:
    backend = make_backend(name, folder, request)
    with np.load(folder / "reference.npz") as stored:
        reference = Vectors(images=stored["images"], texts=stored["texts"])
    return backend, compare(reference, probe(backend, request.processor))


def make_backend(name: str, folder: Path, request: Request) -> Backend:
    if name.startswith("openvino"):
        return OpenVinoBackend(name, folder)
    if name == "torch-bf16":
        return TorchBf16Backend(request.load_reference())
    return OnnxBackend(name, folder)


# ---------------------------------------------------------------- export


def build(request: Request, name: str, folder: Path) -> None:
    """Export (and for onnx-int8 quantise, for openvino convert) into a temporary sibling folder, then rename
    it into place. torch-bf16 exports nothing: its folder holds the fp32 reference it is checked against."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        model = request.load_reference()
        reference = probe(TorchBackend(model, "cpu"), request.processor)
        np.savez(temp / "reference.npz", images=reference.images, texts=reference.texts)
        log.info("exporting %s to %s for CLIP_BACKEND=%s (once per model)", request.model_id, folder, name)
        if name != "torch-bf16":
            export_onnx(model, request.processor, temp)
        if name == "onnx-int8":
            quantise(temp)
        if name.startswith("openvino"):
            to_openvino(temp, compress=name == "openvino-bf16")
        fidelity = compare(reference, probe(make_backend(name, temp, request), request.processor))
        meta = {"backend": name, "model_id": request.model_id, "format": EXPORT_FORMAT,
                "versions": versions(), "fidelity": asdict(fidelity)}
        (temp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        publish(temp, folder, "export.json")
    except BackendRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; all mean "cannot export"
        raise BackendRefused(
            f"CLIP_BACKEND={name} refused for {request.model_id}: export failed ({type(exc).__name__}: {exc}); "
            "set CLIP_BACKEND=torch (or auto) to fall back to PyTorch") from exc
    finally:
        shutil.rmtree(temp, ignore_errors=True)


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
    (save_model would halve them to fp16 by default, which moves fp32 results); the bf16 backend computes in
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


# ---------------------------------------------------------------- the probe set


def probe_images(n: int = PROBE_IMAGES) -> list[Image.Image]:
    """Fixed synthetic scenes: a few coloured shapes on a tinted background (the same pixels every time)."""
    images = []
    for seed in range(n):
        rng = random.Random(f"clip-probe/{seed}")
        image = Image.new("RGB", (112, 112), tuple(rng.randint(60, 250) for _ in range(3)))  # type: ignore[arg-type]
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            x, y, r = rng.uniform(10, 100), rng.uniform(10, 100), rng.uniform(8, 40)
            fill = tuple(rng.randint(0, 255) for _ in range(3))
            if rng.random() < 0.5:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)  # type: ignore[arg-type]
            else:
                sides = rng.randint(3, 6)
                draw.polygon([(x + r * math.cos(2 * math.pi * k / sides), y + r * math.sin(2 * math.pi * k / sides))
                              for k in range(sides)], fill=fill)  # type: ignore[arg-type]
        images.append(image)
    return images


def probe_inputs(processor: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pixels = processor(images=probe_images(), return_tensors="np")["pixel_values"]
    tokens = processor(text=list(PROBE_TEXTS), padding=True, truncation=True, return_tensors="np")
    return np.asarray(pixels, dtype=np.float32), {k: np.asarray(v, dtype=np.int64) for k, v in tokens.items()}


def probe(backend: Backend, processor: Any) -> Vectors:
    pixels, tokens = probe_inputs(processor)
    return Vectors(images=unit(backend.image_features(pixels)), texts=unit(backend.text_features(tokens)))


def compare(reference: Vectors, candidate: Vectors) -> Fidelity:
    """Lowest cosine of any vector with its reference, and the share of probe queries (each text ranks the
    images; each image ranks the other images) whose top-1 result is the reference's."""
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)

    cosines = np.concatenate([cosine(reference.images, candidate.images), cosine(reference.texts, candidate.texts)])
    agree = [top1(reference.texts, reference.images) == top1(candidate.texts, candidate.images),
             top1(reference.images, reference.images, self_match=True)
             == top1(candidate.images, candidate.images, self_match=True)]
    hits = np.concatenate(agree)
    return Fidelity(min_cosine=float(cosines.min()), top1_agreement=float(hits.mean()), queries=int(hits.size))


def top1(queries: np.ndarray, items: np.ndarray, self_match: bool = False) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if self_match:
        np.fill_diagonal(scores, -np.inf)
    return np.asarray(scores.argmax(axis=1))


def unit(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    return (array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)).astype(np.float32)
