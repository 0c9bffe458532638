"""The VQA runner: a thin BentoML service around VisionLanguageModel with adaptive batching.

Requests carry encoded image/video bytes (already validated by the API service); the runner decodes
them, so nothing large is pickled between processes.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel, Field

from config import get_settings
from core.bentoml_compat import NO_RECYCLE
from core.images import load_image
from core.telemetry import observe_batch
from runners.device import gpu_memory

if TYPE_CHECKING:
    from runners.vlm import VisionLanguageModel

log = logging.getLogger(__name__)
SETTINGS = get_settings()


class ChatRequest(BaseModel):
    """One conversation to continue. Messages are Qwen-format: {"role", "content": str | [parts]} where a
    part is {"type": "text", "text"}, {"type": "image", "image": <encoded bytes>} or
    {"type": "video", "video": <encoded bytes>, "suffix": ".mp4"}."""

    messages: list[dict[str, Any]]
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)


class ChatResult(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@contextmanager
def decoded(requests: list[ChatRequest]) -> Iterator[list[list[dict[str, Any]]]]:
    """Qwen conversations with PIL images and temporary video files (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="vqa-") as tmp:
        yield [[decode_message(m, Path(tmp)) for m in request.messages] for request in requests]


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


@bentoml.service(
    name="vqa_runner",
    workers=1,
    traffic={"timeout": SETTINGS.service_timeout_s},
    runner_connection=NO_RECYCLE,
)
class VQARunner:
    """Adaptive-batching runner around VisionLanguageModel. Loads the model when the worker starts."""

    def __init__(self) -> None:
        from runners.vlm import VisionLanguageModel

        self.calls = 0  # generate() calls, to show batching at work in /health
        self.items = 0
        self.counter_lock = threading.Lock()
        self.model: VisionLanguageModel | None = None
        if not SETTINGS.vqa_enabled:
            log.info("VQA_ENABLED=false: no VQA model loaded")
            return
        self.model = VisionLanguageModel.from_settings(SETTINGS)
        log.info("VQA model %s loaded on %s (%s)", SETTINGS.vqa_model, self.model.device, self.model.quantization)

    def __is_ready__(self) -> bool:
        return self.model is not None or not SETTINGS.vqa_enabled

    def loaded(self) -> VisionLanguageModel:
        if self.model is None:
            raise ServiceUnavailable("visual question answering is disabled (VQA_ENABLED=false)")
        return self.model

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.vqa_max_batch_size,
                 max_latency_ms=SETTINGS.vqa_max_latency_ms)
    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Answer a batch; requests with the same sampling settings run as one padded batch."""
        observe_batch("vqa", "generate", len(requests))
        results: dict[int, ChatResult] = {}
        groups: dict[tuple[float, float | None], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.temperature, request.top_p), []).append(index)
        for (temperature, top_p), indexes in groups.items():
            chosen = [requests[i] for i in indexes]
            with decoded(chosen) as conversations:
                out = self.loaded().generate(conversations, [r.max_new_tokens for r in chosen], temperature, top_p)
            with self.counter_lock:
                self.calls += 1
                self.items += len(chosen)
            for i, gen in zip(indexes, out, strict=True):
                results[i] = ChatResult(text=gen.text, prompt_tokens=gen.prompt_tokens,
                                        completion_tokens=gen.completion_tokens, finish_reason=gen.finish_reason)
        return [results[i] for i in range(len(requests))]

    @bentoml.api
    def stream(self, request: ChatRequest) -> Generator[str, None, None]:
        """The answer piece by piece as it is generated."""
        with decoded([request]) as conversations:
            yield from self.loaded().stream_chat(conversations[0], request.max_new_tokens, request.temperature,
                                              request.top_p)

    @bentoml.api
    def info(self) -> dict:
        """Empty when VQA is disabled."""
        if self.model is None:
            return {}
        return {"model_id": self.model.model_id, "device": self.model.device,
                "quantization": self.model.quantization, "generate_calls": self.calls,
                "generated_items": self.items, **gpu_memory(self.model.device)}
