"""Which runtime answers VQA (VQA_RUNTIME), checked before it serves: the memory guard and the fidelity gate.

- `torch`: PyTorch (runners/vlm/torch_runtime.py).
- `openvino`: the cached OpenVINO export (made now when missing: runners/vlm/export.py), on the CPU.
- `auto` (the default): PyTorch on CUDA; on a CPU the OpenVINO export when one is cached, else PyTorch, logged
  with the reason and the command that makes the export.
Every OpenVINO load answers the fidelity probe (runners/vlm/fidelity.py); below VQA_FIDELITY_MIN_MATCH the
runtime is refused and PyTorch is used, with a log line. Before any weights load, the memory guard
(runners/vlm/memory_guard.py) compares the runtime's need with the available memory and stops start-up when it will
not fit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from config import Settings, get_settings
from runners.fidelity import RuntimeRefused
from runners.vlm import openvino_export as vlm_export
from runners.vlm.describe import Describer
from runners.vlm.fidelity import compare, probe_answers
from runners.vlm.inputs import VlmInputs
from runners.vlm.memory_guard import NotEnoughMemory, check_fits, openvino_need, torch_need
from runners.vlm.model import VisionLanguageModel
from runners.vlm.torch_runtime import Quantization

log = logging.getLogger(__name__)

EXPORT_COMMAND = "python -m runners.vlm.export"


def load_vlm(model_dir: str | Path, settings: Settings | None = None, *, quantization: Quantization | None = None,
             model_id: str | None = None) -> VisionLanguageModel:
    """The folder on PyTorch (DEVICE; VQA_QUANTIZATION on CUDA, VQA_TORCH_CPU_DTYPE on a CPU)."""
    from runners.device import pick_device
    from runners.vlm.torch_runtime import TorchRuntime

    settings = settings or get_settings()
    inputs = VlmInputs.load(model_dir, settings)
    runtime = TorchRuntime.load(model_dir, inputs, settings, pick_device(settings.device), quantization)
    return VisionLanguageModel(inputs, runtime, model_id or str(model_dir))


def open_describer(settings: Settings | None = None) -> Describer:
    """VQA_MODEL loaded as the VQA runner loads it (open_vlm), asked DESCRIBE_PROMPT about each photo. Without
    the follow-up caches: the indexer describes each photo once (copies are reused by content hash already), so
    they would only hold memory."""
    settings = (settings or get_settings()).model_copy(update={"vqa_vision_cache_mb": 0, "vqa_prefix_cache_mb": 0})
    return Describer(open_vlm(settings), settings.describe_prompt, settings.describe_max_new_tokens)


def torch_reference(settings: Settings, model_dir: Path) -> list[str]:
    """PyTorch fp32's probe answers on the CPU, through the service's own code (what an export is checked against)."""
    fp32 = settings.model_copy(update={"device": "cpu", "vqa_torch_cpu_dtype": "fp32"})
    return probe_answers(load_vlm(model_dir, fp32, quantization="none", model_id=settings.vqa_model))


def open_vlm(settings: Settings | None = None) -> VisionLanguageModel:
    """VQA_MODEL, resolved as every model is, on the runtime VQA_RUNTIME picks."""
    settings = settings or get_settings()
    from runners.device import pick_device
    from runners.hub import resolve_model

    folder = resolve_model(settings.vqa_model, settings.model_source, settings.model_cache_dir, "VQA_MODEL")
    device = pick_device(settings.device)
    if settings.vqa_runtime == "torch" or (settings.vqa_runtime == "auto" and device == "cuda"):
        return torch_vlm(folder, settings, device)
    try:
        return openvino_vlm(folder, settings, make_export=settings.vqa_runtime == "openvino")
    except RuntimeRefused as exc:
        log.warning("VQA_RUNTIME=%s: %s; using PyTorch instead", settings.vqa_runtime, exc)
    return torch_vlm(folder, settings, device)


def torch_vlm(folder: Path, settings: Settings, device: str) -> VisionLanguageModel:
    if device == "cpu" and settings.vqa_memory_guard:
        precision = settings.vqa_torch_cpu_dtype
        helps = ("use VQA_RUNTIME=openvino with VQA_OPENVINO_WEIGHTS=int8 (or int4, the smallest; "
                 f"`{EXPORT_COMMAND}` makes the export), or VQA_ENABLED=false to serve search only")
        check_fits(f"{settings.vqa_model} on PyTorch {precision}",
                   torch_need(folder, precision, max_pixels(settings)) + cache_bytes(settings), helps)
    return load_vlm(folder, settings, model_id=settings.vqa_model)


def openvino_vlm(folder: Path, settings: Settings, make_export: bool) -> VisionLanguageModel:
    from runners.vlm.openvino_runtime import KV_CACHE_GIB, OpenVinoRuntime

    export = vlm_export.find_export(settings, settings.vqa_model, folder)
    if export is None and not make_export:
        wanted = " or ".join(vlm_export.weights_wanted(settings))
        raise RuntimeRefused(f"no OpenVINO export of {settings.vqa_model} ({wanted}) in {settings.vqa_openvino_cache}"
                             f" (`{EXPORT_COMMAND}` makes it once)")
    if export is None:
        try:
            export = vlm_export.export(settings, settings.vqa_model, folder, lambda: torch_reference(settings, folder))
        except vlm_export.ExportFailed as exc:
            raise RuntimeRefused(str(exc)) from exc
    weights = export.name  # the export's folder is named by its weights (VQA_OPENVINO_WEIGHTS=auto takes either)
    if settings.vqa_memory_guard:
        helps = ("VQA_OPENVINO_WEIGHTS=int4 needs the least" if weights == "int8" else "this is the smallest runtime")
        check_fits(f"{settings.vqa_model} on OpenVINO {weights}",
                   openvino_need(export, folder, max_pixels(settings), KV_CACHE_GIB * 1024**3),
                   f"{helps}; or set VQA_ENABLED=false to serve search only")
    inputs = VlmInputs.load(folder, settings)
    try:
        vlm = VisionLanguageModel(inputs, OpenVinoRuntime.load(export, inputs, settings, weights), settings.vqa_model)
        fidelity = compare(vlm_export.reference_answers(export), probe_answers(vlm))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign export fails in many ways: all mean "refused"
        raise RuntimeRefused(f"the OpenVINO export in {export} does not load ({type(exc).__name__}: {exc})") from exc
    described = f"OpenVINO {weights} ({getattr(vlm.runtime, 'compute', '?')} compute): {fidelity.describe()}"
    if not fidelity.passes(settings.vqa_fidelity_min_match):
        raise RuntimeRefused(f"{described}, below VQA_FIDELITY_MIN_MATCH={settings.vqa_fidelity_min_match}")
    log.info("VQA runtime %s", described)
    return vlm


def cache_bytes(settings: Settings) -> int:
    """What PyTorch's follow-up caches hold when full (runners/vlm/torch_reuse.py): counted as needed."""
    return (settings.vqa_vision_cache_mb + settings.vqa_prefix_cache_mb) * 1024**2


def max_pixels(settings: Settings) -> int:
    return settings.vqa_max_pixels or 12_845_056  # 0: the model's own bound (Qwen2.5-VL: 16384 * 28 * 28)


__all__ = ["NotEnoughMemory", "RuntimeRefused", "load_vlm", "open_describer", "open_vlm"]
