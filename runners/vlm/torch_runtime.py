"""The PyTorch runtime for Qwen2.5-VL (transformers' Qwen2_5_VLForConditionalGeneration): VQA_RUNTIME=torch.

On CUDA: bf16/fp16 weights, or bitsandbytes 4-bit/8-bit (VQA_QUANTIZATION). On a CPU: fp32 by default, bf16 when
VQA_TORCH_CPU_DTYPE=bf16 (worth it only where the CPU computes bf16 natively: AMX or AVX-512 BF16).
Heavy imports (torch, transformers) happen inside functions only.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from config import Settings
from runners.device import native_bf16
from runners.vlm.inputs import Prepared, VlmInputs
from runners.vlm.runtime import Row, Sampling
from runners.vlm.torch_reuse import TorchReuse

log = logging.getLogger(__name__)

Quantization = Literal["4bit", "8bit", "none"]
QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit", "none")


class TorchRuntime:
    """A loaded transformers Qwen2.5-VL generating token ids. Generate calls are serialised by a lock."""

    name = "torch"
    video = True

    def __init__(self, model: Any, inputs: VlmInputs, device: str, precision: str, quantization: Quantization) -> None:
        self.model = model
        self.inputs = inputs
        self.device = device
        self.precision = precision
        self.quantization: Quantization = quantization
        # Follow-up questions reuse a photo's vision encoding and prompt prefix (runners/vlm/torch_reuse.py).
        self.reuse = TorchReuse(inputs.settings, f"torch/{precision}/{getattr(model, 'name_or_path', '')}")
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, inputs: VlmInputs, settings: Settings, device: str,
             quantization: Quantization | None = None) -> TorchRuntime:
        """`quantization` None means VQA_QUANTIZATION on CUDA and "none" on CPU; "4bit"/"8bit" force
        bitsandbytes on CPU too (bitsandbytes 0.50 loads and runs NF4 on CPU)."""
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        if quantization is None:
            quantization = settings.vqa_quantization if device == "cuda" else "none"
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        dtype = compute_dtype(settings, device, quantization)
        kwargs: dict[str, Any] = {"dtype": dtype, "low_cpu_mem_usage": True}
        if quantization != "none":
            kwargs["quantization_config"] = bitsandbytes_config(quantization, dtype)
        if device == "cuda":
            kwargs["device_map"] = "auto"
        elif quantization != "none":
            kwargs["device_map"] = {"": "cpu"}
        model: Any = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
        names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        precision = {"4bit": "nf4", "8bit": "int8"}.get(quantization, names[dtype])
        return cls(model.eval(), inputs, device, precision, quantization)

    def run_batch(self, items: Sequence[Prepared], limits: Sequence[int], deadlines: Sequence[float | None],
                  sampling: Sampling) -> list[Row]:
        from transformers import StoppingCriteriaList

        batch = self.inputs.collate(items).to(self.model.device)
        start = batch["input_ids"].shape[1]  # left padding: every row's prompt ends here
        stop = row_stop(deadlines, limits, start)
        output = self.generate(batch, max(limits), sampling, stopping_criteria=StoppingCriteriaList([stop]))
        return [Row(tokens=output[row, start:].tolist()[:limit], cut_at=stop.tripped.get(row))
                for row, limit in enumerate(limits)]

    def stream(self, item: Prepared, limit: int, sampling: Sampling, deadline: float | None,
               cancelled: threading.Event) -> Iterator[list[int]]:
        from transformers import StoppingCriteriaList

        batch = item.features.to(self.model.device)
        stop = row_stop([deadline], [limit], batch["input_ids"].shape[1], cancelled)
        pieces: queue.Queue[list[int] | BaseException | None] = queue.Queue()

        def run() -> None:
            try:
                self.generate(batch, limit, sampling, streamer=TokenQueue(pieces),
                              stopping_criteria=StoppingCriteriaList([stop]))
                pieces.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                pieces.put(exc)

        thread = threading.Thread(target=run, name="vlm-stream", daemon=True)
        thread.start()
        try:
            while (piece := pieces.get()) is not None:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            cancelled.set()  # the consumer closed the generator or the pieces ended: stop generating
            thread.join()

    def generate(self, batch: Any, max_new_tokens: int, sampling: Sampling, **extra: Any) -> Any:
        import torch

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.pad_token_id = self.inputs.pad_token_id
        # Override the checkpoint's sampling defaults (Qwen ships temperature 0.1, top_p 0.001, top_k 1).
        # None would fall back to them, so the neutral values are set explicitly.
        if sampling.temperature > 0:
            config.update(do_sample=True, temperature=float(sampling.temperature), top_k=0,
                          top_p=1.0 if sampling.top_p is None else float(sampling.top_p))
        else:
            config.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
        with self._lock, torch.inference_mode():
            kwargs = self.reuse.generate_kwargs(self.model, batch)
            return self.model.generate(**kwargs, generation_config=config, **extra)

    def caches(self) -> dict[str, dict[str, int]]:
        return self.reuse.info()


class TokenQueue:
    """A transformers streamer that puts each step's new token ids on a queue (the prompt is skipped)."""

    def __init__(self, pieces: queue.Queue[Any]) -> None:
        self.pieces = pieces
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.pieces.put([int(token) for token in value.reshape(-1).tolist()])

    def end(self) -> None:
        """The run() wrapper says when generation ended (or raised)."""


def compute_dtype(settings: Settings, device: str, quantization: str) -> Any:
    import torch

    if device == "cuda":
        # LLM.int8 multiplies in fp16 (bitsandbytes casts bf16 inputs, warning on every call).
        bf16 = quantization != "8bit" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    if settings.vqa_torch_cpu_dtype == "bf16" and not native_bf16():
        log.warning("VQA_TORCH_CPU_DTYPE=bf16 on a CPU without AMX or AVX-512 BF16: PyTorch emulates bf16 here, "
                    "far slower than fp32 (measured 25x on an AVX2 CPU); use fp32 or VQA_RUNTIME=openvino")
    return torch.bfloat16 if settings.vqa_torch_cpu_dtype == "bf16" else torch.float32


def row_stop(
    deadlines: Sequence[float | None], limits: Sequence[int], start: int, cancelled: threading.Event | None = None
) -> Any:
    """A transformers StoppingCriteria that stops each row at its own token limit (generate runs to the
    largest) and each row whose deadline has passed (every row once `cancelled` is set), remembering how
    many tokens a row had generated when its deadline stopped it."""
    import torch
    from transformers import StoppingCriteria

    class RowStop(StoppingCriteria):
        def __init__(self) -> None:
            self.tripped: dict[int, int] = {}  # row -> tokens generated when its deadline stopped it

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            now, generated = time.time(), input_ids.shape[1] - start
            late = [bool(cancelled and cancelled.is_set()) or (d is not None and now > d) for d in deadlines]
            for row, stopped in enumerate(late):
                if stopped:
                    self.tripped.setdefault(row, generated)
            stop = [stopped or generated >= limit for stopped, limit in zip(late, limits, strict=True)]
            return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

    return RowStop()


def bitsandbytes_config(quantization: str, compute_dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)
