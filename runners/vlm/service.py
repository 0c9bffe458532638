"""The VQA runner: a thin BentoML service around VisionLanguageModel with adaptive batching.

Requests carry encoded image/video bytes (already validated by the API service); the runner decodes
them, so nothing large is pickled between processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import ServiceUnavailable

from config import load_settings_or_exit
from core.bentoml_compat import runner_options
from core.images import BadImage, load_image
from core.telemetry import observe_batch
from runners.device import gpu_memory
from runners.hub import ModelNotFoundError
from runners.vlm import ChatRequest, ChatResult, ItemError, NotEnoughMemory, VisionLanguageModel, open_vlm

log = logging.getLogger(__name__)
SETTINGS = load_settings_or_exit()  # a bad setting: one line naming it, exit 2


def failure(exc: ItemError) -> dict[str, Any]:
    return {"status": exc.status, "code": exc.code, "message": exc.message}


def stream_header(error: dict[str, Any] | None) -> str:
    """The first piece of every stream: one JSON line saying whether the answer follows (error null)
    or the request was refused (its error), so the API can answer a 4xx before its own 200 starts."""
    return json.dumps({"error": error}) + "\n"


def decode_message(message: dict[str, Any], tmp: Path) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    parts = []
    for part in content:
        if part.get("type") == "image" and isinstance(part.get("image"), bytes):
            part = {"type": "image", "image": load_image(part["image"])[0]}
        elif part.get("type") == "video" and isinstance(part.get("video"), bytes):
            path = tmp / f"video-{len(list(tmp.iterdir()))}{part.get('suffix', '.mp4')}"
            path.write_bytes(part["video"])
            part = {"type": "video", "video": str(path)}
        parts.append(part)
    return {**message, "content": parts}


def decode_request(request: ChatRequest, tmp: Path) -> list[dict[str, Any]]:
    """One request's Qwen conversation (PIL images, video files under `tmp`), or ItemError 400."""
    try:
        return [decode_message(message, tmp) for message in request.messages]
    except BadImage as exc:
        raise ItemError(400, "invalid_argument", f"image: {exc}") from exc
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise ItemError(400, "invalid_argument", f"the request could not be decoded: {exc}") from exc


@bentoml.service(name="vqa_runner", **runner_options(SETTINGS.service_timeout_s))
class VQARunner:
    """Adaptive-batching runner around VisionLanguageModel. Loads the model when the worker starts."""

    def __init__(self) -> None:
        self.calls = 0  # generate() calls, to show batching at work in /health
        self.items = 0
        self.counter_lock = threading.Lock()
        self.streams: dict[str, threading.Event] = {}  # request_id -> its stream's cancellation
        self.model: VisionLanguageModel | None = None
        if not SETTINGS.vqa_enabled:
            log.info("VQA_ENABLED=false: no VQA model loaded")
            return
        try:
            self.model = open_vlm(SETTINGS)
        except (NotEnoughMemory, ModelNotFoundError) as exc:
            stop_server(f"the VQA model cannot be loaded: {exc}")
            raise
        log.info("VQA model %s loaded: %s %s on %s", SETTINGS.vqa_model, self.model.runtime.name, self.model.precision,
                 self.model.device)

    def __is_ready__(self) -> bool:
        return self.model is not None or not SETTINGS.vqa_enabled

    def loaded(self) -> VisionLanguageModel:
        if self.model is None:
            raise ServiceUnavailable("visual question answering is disabled (VQA_ENABLED=false)")
        return self.model

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.vqa_max_batch_size,
                 max_latency_ms=SETTINGS.vqa_max_latency_ms)
    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Answer a batch, each request on its own: one that fails gets its own error in its ChatResult
        and the others the answers they would get alone. Requests with the same sampling settings run
        as one padded batch."""
        observe_batch("vqa", "generate", len(requests))
        results: dict[int, ChatResult] = {}
        groups: dict[tuple[float, float | None], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.temperature, request.top_p), []).append(index)
        for (temperature, top_p), indexes in groups.items():
            results.update(zip(indexes, self.generate_group([requests[i] for i in indexes], temperature, top_p),
                               strict=True))
        return [results[i] for i in range(len(requests))]

    def generate_group(self, requests: list[ChatRequest], temperature: float, top_p: float | None) -> list[ChatResult]:
        model = self.loaded()
        with tempfile.TemporaryDirectory(prefix="vqa-") as tmp:
            decoded: dict[int, Any] = {}
            answers: dict[int, Any] = {}
            for index, request in enumerate(requests):
                try:
                    decoded[index] = decode_request(request, Path(tmp))
                except ItemError as exc:
                    answers[index] = exc
            chosen = [requests[i] for i in decoded]
            out = model.generate_each(list(decoded.values()), [r.max_new_tokens for r in chosen], temperature,
                                      top_p, [r.deadline for r in chosen])
            answers.update(zip(decoded, out, strict=True))
        with self.counter_lock:
            self.calls += 1
            self.items += len(chosen)
        return [as_result(answers[i]) for i in range(len(requests))]

    @bentoml.api
    def stream(self, request: ChatRequest) -> Generator[str, None, None]:
        """A header line (see stream_header), then the answer piece by piece as it is generated.
        Generation stops at the request's deadline, or when cancel(request_id) is called."""
        model = self.loaded()
        cancelled = self.streams[request.request_id] = threading.Event()
        try:
            with tempfile.TemporaryDirectory(prefix="vqa-") as tmp:  # videos are decoded while preparing
                try:
                    conversation = decode_request(request, Path(tmp))
                    pieces = model.start_stream(conversation, request.max_new_tokens, request.temperature,
                                                request.top_p, request.deadline, cancelled)
                except ItemError as exc:
                    yield stream_header(failure(exc))
                    return
            yield stream_header(None)
            try:
                yield from pieces
            finally:
                pieces.close()
        finally:
            self.streams.pop(request.request_id, None)

    @bentoml.api
    async def cancel(self, request_id: str) -> bool:
        """Stop generating for the stream of `request_id` (its caller has gone); False when none runs."""
        cancelled = self.streams.get(request_id)
        if cancelled is not None:
            cancelled.set()
        return cancelled is not None

    @bentoml.api
    def info(self) -> dict:
        """Empty when VQA is disabled."""
        if self.model is None:
            return {}
        return {"model_id": self.model.model_id, "device": self.model.device, "runtime": self.model.runtime.name,
                "precision": self.model.precision, "quantization": self.model.quantization,
                "generate_calls": self.calls, "generated_items": self.items, "caches": self.model.caches(),
                **gpu_memory(self.model.device)}


def stop_server(message: str) -> None:
    """A start-up error no restart can mend (too little memory, no such model): say so, and stop the whole
    `bentoml serve` (this worker's parent) instead of letting it restart this worker forever."""
    log.critical("%s; stopping the server", message)
    os.kill(os.getppid(), signal.SIGTERM)


def as_result(answer: Any) -> ChatResult:
    if isinstance(answer, ItemError):
        return ChatResult(error=failure(answer))
    return ChatResult(text=answer.text, prompt_tokens=answer.prompt_tokens,
                      completion_tokens=answer.completion_tokens, finish_reason=answer.finish_reason)
