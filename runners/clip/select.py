"""Which runtime computes CLIP vectors (CLIP_RUNTIME), exported once, checked against PyTorch, refused and fallen back.

`CLIP_RUNTIME=auto` (the default) runs PyTorch on CUDA and, on CPU, the fastest installed runtime that is
faithful (fp32 OpenVINO, else fp32 ONNX Runtime: the same rankings as PyTorch fp32); low-precision runtimes
(openvino-bf16, torch-bf16, onnx-int8) are opt-in. A runtime is never trusted blindly: when it is built
(export) and every time it is loaded, it encodes the fixed probe set (runners/clip/fidelity.py) and its
vectors are compared with PyTorch fp32's on the user's own model (stored with the export). The agreement
is logged, and a runtime whose probe rankings move past the bound (CLIP_RUNTIME_MIN_TOP1 /
CLIP_RUNTIME_MIN_COSINE) is refused (runners/fidelity.RuntimeRefused): an error at start-up for an explicit
choice, PyTorch with a warning for `auto`.

Exports live in CLIP_RUNTIME_CACHE/<model>-<hash of the model files>/<runtime>/ and are staged and published
atomically (runners/export_cache.py), so an interrupted export or two processes exporting at once (the indexer
and the CLIP runner) never leave a half-written model behind. Nothing is downloaded: the export is made from the
local model folder with the installed torch and onnxruntime.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runners.clip.export import EXPORT_FORMAT, cache_folder, export_onnx, quantise, to_openvino, versions
from runners.clip.fidelity import Bounds, Vectors, compare, probe
from runners.clip.onnx_runtime import OnnxRuntime
from runners.clip.openvino_runtime import OpenVinoRuntime
from runners.clip.runtime import Runtime
from runners.clip.torch_runtime import TorchBf16Runtime, TorchRuntime
from runners.export_cache import MARKER, staged, write_marker
from runners.fidelity import Fidelity, RuntimeRefused

log = logging.getLogger(__name__)

CHOICES = ("auto", "torch", "openvino", "onnx", "openvino-bf16", "torch-bf16", "onnx-int8")


FAITHFUL = ("openvino", "onnx")  # auto's CPU candidates, fastest first: fp32, the same rankings as PyTorch fp32


LOW_PRECISION = ("openvino-bf16", "torch-bf16", "onnx-int8")  # opt-in only


NEEDS = {"onnx": ("onnxruntime", "onnx"), "onnx-int8": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"),
         "openvino-bf16": ("openvino", "onnx")}  # the packages each runtime (and its export) imports


def installed(choice: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in NEEDS.get(choice, ()))



@dataclass
class Request:
    """What `open_runtime` needs: the model, where exports go, the bounds, and a way to load PyTorch."""

    choice: str  # one of CHOICES
    model_dir: Path
    model_id: str
    device: str  # resolved: "cpu" or "cuda"
    cache_dir: Path
    bounds: Bounds
    load_torch: Callable[[], Any]  # the fp32/fp16 transformers model on `device`, loaded once
    load_reference: Callable[[], Any]  # an fp32 CPU transformers model (the export and probe reference)
    processor: Any



def open_runtime(request: Request) -> Runtime:
    """The runtime `request.choice` names (see the module docstring for `auto`)."""
    if request.choice not in CHOICES:
        raise RuntimeRefused(f"CLIP_RUNTIME={request.choice!r} is not one of {', '.join(CHOICES)}")
    if request.choice == "torch" or (request.choice == "auto" and request.device == "cuda"):
        return TorchRuntime(request.load_torch(), request.device)
    if request.choice != "auto":
        return exported(request, request.choice, request.bounds)
    for name in FAITHFUL:
        if not installed(name):
            continue
        try:
            return exported(request, name, request.bounds.faithful())
        except RuntimeRefused as exc:
            log.warning("CLIP_RUNTIME=auto: %s; falling back to PyTorch (CLIP_RUNTIME=torch)", exc)
    return TorchRuntime(request.load_torch(), request.device)



def exported(request: Request, name: str, bounds: Bounds) -> Runtime:
    """An exported runtime (or torch-bf16, whose folder holds only its reference) from the cache (exported
    first when missing; re-exported once when the cached copy does not load or no longer matches its stored
    reference), checked against `bounds`."""
    refuse = f"CLIP_RUNTIME={name} refused for {request.model_id}"
    fallback = "set CLIP_RUNTIME=torch (or auto) to fall back to PyTorch"
    if not installed(name):
        raise RuntimeRefused(f"{refuse}: {'/'.join(NEEDS[name])} not installed; {fallback}")
    if request.device == "cuda":
        log.warning("CLIP_RUNTIME=%s runs on the CPU (only PyTorch uses CUDA here)", name)
    folder = cache_folder(request.cache_dir, request.model_id, request.model_dir) / name
    fresh = False
    if not (folder / MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)  # whatever is there is not a finished export
        build(request, name, folder)
        fresh = True
    try:
        runtime, fidelity = load_checked(name, folder, request)
    except Exception as exc:  # noqa: BLE001 - any failure to load a cached export means: build it again
        if fresh:
            raise RuntimeRefused(f"{refuse}: the export does not load ({exc}); {fallback}") from exc
        log.warning("CLIP runtime cache %s does not load (%s): exporting again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return exported(request, name, bounds)
    if not fidelity.passes(bounds.min_top1, bounds.min_cosine) and not fresh:
        # A cached copy that loads but drifted from its reference (damaged file): rebuild it once.
        log.warning("CLIP runtime cache %s: %s; exporting again", folder, fidelity.describe())
        shutil.rmtree(folder, ignore_errors=True)
        return exported(request, name, bounds)
    log.info("CLIP_RUNTIME=%s vs PyTorch fp32 on %s: %s", name, request.model_id, fidelity.describe())
    if not fidelity.passes(bounds.min_top1, bounds.min_cosine):
        raise RuntimeRefused(
            f"{refuse}: {fidelity.describe()} vs PyTorch fp32, past the bound (CLIP_RUNTIME_MIN_TOP1="
            f"{bounds.min_top1}, CLIP_RUNTIME_MIN_COSINE={bounds.min_cosine}); {fallback}, "
            "or loosen the bound")
    return runtime



def load_checked(name: str, folder: Path, request: Request) -> tuple[Runtime, Fidelity]:
    runtime = make_runtime(name, folder, request)
    with np.load(folder / "reference.npz") as stored:
        reference = Vectors(images=stored["images"], texts=stored["texts"])
    return runtime, compare(reference, probe(runtime, request.processor))



def make_runtime(name: str, folder: Path, request: Request) -> Runtime:
    if name.startswith("openvino"):
        return OpenVinoRuntime(name, folder)
    if name == "torch-bf16":
        return TorchBf16Runtime(request.load_reference())
    return OnnxRuntime(name, folder)



def build(request: Request, name: str, folder: Path) -> None:
    """Export (and for onnx-int8 quantise, for openvino convert) in a staged folder published when complete.
    torch-bf16 exports nothing: its folder holds the fp32 reference it is checked against."""
    try:
        with staged(folder) as temp:
            model = request.load_reference()
            reference = probe(TorchRuntime(model, "cpu"), request.processor)
            np.savez(temp / "reference.npz", images=reference.images, texts=reference.texts)
            log.info("exporting %s to %s for CLIP_RUNTIME=%s (once per model)", request.model_id, folder, name)
            if name != "torch-bf16":
                export_onnx(model, request.processor, temp)
            if name == "onnx-int8":
                quantise(temp)
            if name.startswith("openvino"):
                to_openvino(temp, compress=name == "openvino-bf16")
            fidelity = compare(reference, probe(make_runtime(name, temp, request), request.processor))
            write_marker(temp, {"backend": name, "model_id": request.model_id, "format": EXPORT_FORMAT,
                                "versions": versions(), "fidelity": asdict(fidelity)})
    except RuntimeRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; all mean "cannot export"
        raise RuntimeRefused(
            f"CLIP_RUNTIME={name} refused for {request.model_id}: export failed ({type(exc).__name__}: {exc}); "
            "set CLIP_RUNTIME=torch (or auto) to fall back to PyTorch") from exc
