"""VQA requests: build the runner's ChatRequest from /vqa, /vqa/stream and /v1/chat/completions
input, admit at most VQA_MAX_QUEUE of them at once, and call the VQA runner. The runner and the
library are passed in, so a fake runner tests it without a server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api import openai
from api.errors import ApiError, bad_request, unavailable
from api.json_body import parse_json
from api.runner_calls import from_runner
from api.searching import not_in_library
from config import Settings
from core.images import BadImage, load_image
from core.library import Library, NotInLibrary
from core.telemetry import count_tokens
from runners.vlm_service import ChatRequest

VQA_DISABLED = "visual question answering is disabled on this server (VQA_ENABLED=false)"


def video_suffix(data: bytes) -> str | None:
    """.mp4 or .webm by the file's magic bytes."""
    if data[4:8] == b"ftyp":
        return ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    return None


def video_part(video: Path) -> dict[str, Any]:
    data = Path(str(video)).read_bytes()
    suffix = video_suffix(data)
    if suffix is None:
        raise bad_request("video: not an mp4 or webm file")
    return {"type": "video", "video": data, "suffix": suffix}


def result_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.model_dump()


class VqaRequests:
    def __init__(self, vqa: Any, library: Library, settings: Settings) -> None:
        self.vqa = vqa
        self.library = library
        self.settings = settings
        self.model_id = settings.vqa_model
        self.in_flight = 0

    def require_enabled(self) -> None:
        if not self.settings.vqa_enabled:
            raise ApiError(503, "vqa_disabled", VQA_DISABLED)

    def build(self, question: str, image: Path | None, video: Path | None, image_id: str | None,
              max_new_tokens: int | None) -> ChatRequest:
        """The ChatRequest of a /vqa or /vqa/stream call (400 for bad input, 404 for an image_id the
        library refuses)."""
        self.require_enabled()
        question = question.strip()
        if not question:
            raise bad_request("question is empty")
        if len(question) > self.settings.max_query_chars:
            raise bad_request(f"question is longer than {self.settings.max_query_chars} characters")
        given = [name for name, value in (("image", image), ("video", video), ("image_id", image_id)) if value]
        if len(given) != 1:
            raise bad_request("send exactly one of image, video or image_id")
        if video is not None:
            media = video_part(video)
        else:
            data = self.library_image(image_id) if image_id else Path(str(image)).read_bytes()
            try:
                load_image(data)
            except BadImage as exc:
                if image_id:  # a library file that is not a readable image is not one of its images
                    raise not_in_library(image_id) from exc
                raise bad_request(f"image: {exc}") from exc
            media = {"type": "image", "image": data}
        content = [media, {"type": "text", "text": question}]
        return ChatRequest(messages=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens)

    def library_image(self, image_id: str) -> bytes:
        try:
            return self.library.read_bytes(image_id)
        except NotInLibrary as exc:
            raise not_in_library(image_id) from exc

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Bound the VQA requests in flight: past VQA_MAX_QUEUE, answer 503 with Retry-After at once."""
        if self.in_flight >= self.settings.vqa_max_queue:
            raise unavailable("vqa_busy", "visual question answering is at capacity: retry shortly",
                              self.settings.retry_after_s)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def in_slot(self, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
        """Take a VQA slot now (503 if none) and hold it until the stream ends or the client leaves."""
        slot = self.slot()
        slot.__enter__()

        async def held() -> AsyncIterator[str]:
            try:
                async for piece in pieces:
                    yield piece
            finally:
                slot.__exit__(None, None, None)

        return held()

    async def generate(self, request: ChatRequest, path: str) -> dict[str, Any]:
        """One answer, in a slot; its tokens are counted under `path`."""
        with self.slot():
            results = await from_runner(self.vqa.to_async.generate([request]), self.settings.retry_after_s)
        count_tokens(path, results)
        return result_dict(results[0])

    def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        return self.in_slot(self.vqa.to_async.stream(request))

    async def chat_completion(self, request: Request) -> Response:
        """POST /v1/chat/completions: an OpenAI chat body -> a completion, or server-sent events."""
        body = parse_json(await request.body())
        fields = openai.parse_chat(body, self.settings.vqa_max_images, self.settings.vqa_max_new_tokens_cap)
        self.require_enabled()
        chat = ChatRequest(**{k: v for k, v in fields.items() if k != "stream"})
        if fields["stream"]:
            return StreamingResponse(self.in_slot(self.chat_events(chat)), media_type="text/event-stream")
        result = await self.generate(chat, request.url.path)
        return JSONResponse(openai.completion(self.model_id, result))

    async def chat_events(self, chat: ChatRequest) -> AsyncIterator[str]:
        chat_id = f"chatcmpl-{uuid.uuid4().hex}"
        yield openai.chunk(chat_id, self.model_id, {"role": "assistant", "content": ""})
        async for piece in self.vqa.to_async.stream(chat):
            if piece:
                yield openai.chunk(chat_id, self.model_id, {"content": piece})
        yield openai.chunk(chat_id, self.model_id, {}, finish="stop")
        yield "data: [DONE]\n\n"
