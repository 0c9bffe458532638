"""VQA requests: build the runner's ChatRequest from /vqa, /vqa/stream and /v1/chat/completions
input, admit at most VQA_MAX_QUEUE of them at once, and call the VQA runner. The runner and the
library are passed in, so a fake runner tests it without a server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from api import chat_completions, vqa_moments
from api.chat_completions import Answer, Chat
from api.errors import ApiError, bad_request, unavailable
from api.runner_calls import from_runner, runner_unavailable
from api.searching import not_in_library
from config import Settings
from core.images import BadImage, load_image
from core.library import Library, NotInLibrary, is_video_name
from core.telemetry import count_tokens
from runners.vlm import ChatRequest

log = logging.getLogger("service")
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

    async def prepare(self, question: str, image: Path | None, video: Path | None, image_id: str | None,
                      max_new_tokens: int | None, t: float | None = None) -> ChatRequest:
        """build() on a worker thread: reading and validating an upload (decoding a 12-MP photo takes
        a fraction of a second) must not hold the event loop."""
        return await asyncio.to_thread(self.build, question, image, video, image_id, max_new_tokens, t)

    def build(self, question: str, image: Path | None, video: Path | None, image_id: str | None,
              max_new_tokens: int | None, t: float | None = None) -> ChatRequest:
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
        if t is not None or (image_id and is_video_name(image_id)):  # a moment of a library video
            content = [*self.moment(image_id, t), {"type": "text", "text": question}]
            return ChatRequest(messages=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens,
                               deadline=self.deadline())
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
        return ChatRequest(messages=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens,
                           deadline=self.deadline())

    def deadline(self) -> float:
        """When the caller stops waiting (REQUEST_TIMEOUT_S from now): the runner stops generating then."""
        return time.time() + self.settings.request_timeout_s

    def moment(self, image_id: str | None, t: float | None) -> list[dict[str, Any]]:
        """The frames around `t` of library video `image_id` (api/vqa_moments.py); 404 as for a missing image."""
        vqa_moments.check_t(t, image_id, bool(image_id) and is_video_name(str(image_id)))
        try:
            rel = self.library.resolve(str(image_id)).rel
            return vqa_moments.moment_parts(self.library, rel, float(t or 0.0))
        except NotInLibrary as exc:
            raise not_in_library(str(image_id)) from exc

    def library_image(self, image_id: str) -> bytes:
        try:
            return self.library.read_bytes(image_id)
        except NotInLibrary as exc:
            raise not_in_library(image_id) from exc

    def check_room(self) -> None:
        """503 with Retry-After when VQA_MAX_QUEUE requests are in flight."""
        if self.in_flight >= self.settings.vqa_max_queue:
            raise unavailable("vqa_busy", "visual question answering is at capacity: retry shortly",
                              self.settings.retry_after_s)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Bound the VQA requests in flight: past VQA_MAX_QUEUE, answer 503 with Retry-After at once."""
        self.check_room()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def generate(self, request: ChatRequest, path: str) -> dict[str, Any]:
        """One answer, in a slot; its tokens are counted under `path`. A request the runner refused
        or could not answer raises its own ApiError (400 naming the cause, 500, 504)."""
        with self.slot():
            results = await from_runner(self.vqa.to_async.generate([request]), self.settings.retry_after_s)
        count_tokens(path, results)
        result = result_dict(results[0])
        raise_failure(result.get("error"))
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        """Take a VQA slot (503 if none), start the runner's stream and read its header: a request the
        runner refuses raises its ApiError here, before any 200 is sent. Else the answer's pieces, which
        hold the slot until they end or the client leaves."""
        slot = contextlib.ExitStack()
        slot.enter_context(self.slot())
        try:
            return await self.open_stream(request, slot)
        except BaseException:
            slot.close()
            raise

    async def open_stream(self, request: ChatRequest, slot: contextlib.ExitStack) -> AsyncIterator[str]:
        pieces = self.vqa.to_async.stream(request)
        buffer = ""
        while "\n" not in buffer:  # the header line may arrive split or joined with the first piece
            try:
                buffer += await from_runner(anext(pieces), self.settings.retry_after_s)
            except StopAsyncIteration:
                raise runner_unavailable(RuntimeError("the VQA stream ended before its header"),
                                         self.settings.retry_after_s) from None
        header, _, rest = buffer.partition("\n")
        error = json.loads(header).get("error")
        if error:
            await pieces.aclose()  # type: ignore[attr-defined]
            raise_failure(error)
        return self.held(rest, pieces, slot, request.request_id)

    async def held(self, first: str, pieces: AsyncIterator[str], slot: contextlib.ExitStack,
                   request_id: str) -> AsyncIterator[str]:
        """The answer's pieces, then the slot back. A client that leaves early (the response task is
        cancelled) cancels the runner's generation by name: closing the runner stream alone does not
        reach it reliably, as its cleanup is cancelled too."""
        finished = False
        try:
            if first:
                yield first
            async for piece in pieces:
                yield piece
            finished = True
        finally:
            slot.close()
            if not finished:
                with anyio.CancelScope(shield=True):
                    await self.cancel_stream(request_id)

    async def cancel_stream(self, request_id: str) -> None:
        try:
            await asyncio.wait_for(self.vqa.to_async.cancel(request_id), timeout=5)
        except Exception as exc:  # noqa: BLE001 - the runner is gone: nothing runs to stop
            log.warning("could not cancel VQA stream %s: %r", request_id, exc)

    async def chat_completion(self, request: Request) -> Response:
        """POST /v1/chat/completions answered by the VQA model alone (the route: api/chat_completions.py)."""
        return await chat_completions.complete(await request.body(), request.url.path, self, self)

    async def chat_answer(self, chat: Chat, path: str) -> Answer:
        """A checked chat (503 when VQA is disabled): the runner's answer, or its opened stream."""
        self.require_enabled()
        request = ChatRequest(messages=chat.messages, **chat.sampling(), deadline=self.deadline())
        if chat.stream:
            return Answer(self.model_id, pieces=await self.stream(request))
        return Answer(self.model_id, result=await self.generate(request, path))


def raise_failure(error: dict[str, Any] | None) -> None:
    """The runner's per-request error (see runners.vlm.service.ChatResult) as the ApiError it is."""
    if error:
        raise ApiError(int(error["status"]), str(error["code"]), str(error["message"]))
