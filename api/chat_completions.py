"""POST /v1/chat/completions, the one OpenAI chat adapter: the body is parsed and checked once into a Chat,
its model picks who answers (the library for "library", else the VQA model), and the answer (a full text,
or pieces as they are generated plus optional trailing text) becomes the completion JSON or its SSE stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.chat_messages import parse_chat
from api.errors import ApiError
from api.http.json_body import parse_json
from config import Settings

LIBRARY_MODEL = "library"  # the model id of /v1/chat/completions that asks the library (api/asking.py)


@dataclass(frozen=True)
class Chat:
    """A checked chat body: the model it names, the messages (data-URL images decoded), sampling, stream."""

    model: Any
    messages: list[dict[str, Any]]
    max_new_tokens: int | None
    temperature: float
    top_p: float | None
    stream: bool

    def sampling(self) -> dict[str, Any]:
        """The ChatRequest fields besides the messages."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p}


def parse(raw: bytes, settings: Settings) -> Chat:
    """Parse and check a chat body, its data-URL images decoded to validate them (400 naming the cause).
    Run it on a worker thread: a body can be MBs of base64."""
    body = parse_json(raw)
    fields = parse_chat(body, settings.vqa_max_images, settings.vqa_max_new_tokens_cap, settings.vqa_max_text_chars)
    return Chat(model=body.get("model"), **fields)


@dataclass(frozen=True)
class Answer:
    """What a chat model answered, under the model id it reports. Either `result` (the runner's full answer:
    text, prompt_tokens, completion_tokens, finish_reason) or `pieces` (the text as it is generated; an
    ApiError among them, after the 200, ends the stream with the error said in the text). `trailer` gives
    the text that follows the whole answer (the library's sources), from the answer's text."""

    model: str
    result: dict[str, Any] | None = None
    pieces: AsyncIterator[str | ApiError] | None = None
    trailer: Callable[[str], str] | None = None


class ChatModel(Protocol):
    settings: Settings

    async def chat_answer(self, chat: Chat, path: str) -> Answer: ...


async def complete(raw: bytes, path: str, vqa: ChatModel, library: ChatModel) -> Response:
    """An OpenAI chat body -> a completion, or server-sent events; the body parsed once, off the loop."""
    chat = await asyncio.to_thread(parse, raw, vqa.settings)
    model = library if chat.model == LIBRARY_MODEL else vqa
    return respond(await model.chat_answer(chat, path))


def respond(answer: Answer) -> Response:
    if answer.pieces is not None:
        return StreamingResponse(events(answer.model, answer.pieces, answer.trailer), media_type="text/event-stream")
    assert answer.result is not None
    text = answer.result["text"]
    return JSONResponse(completion(answer.model, {**answer.result, "text": text + trailing(answer.trailer, text)}))


def trailing(trailer: Callable[[str], str] | None, text: str) -> str:
    return trailer(text) if trailer else ""


async def events(model: str, pieces: AsyncIterator[str | ApiError],
                 trailer: Callable[[str], str] | None) -> AsyncIterator[str]:
    """The chunks: the assistant's role, each non-empty piece, the trailing text, the finish; then [DONE]."""
    chat_id = f"chatcmpl-{uuid.uuid4().hex}"
    answer = ""
    try:
        yield chunk(chat_id, model, {"role": "assistant", "content": ""})
        async for piece in pieces:
            if isinstance(piece, ApiError):  # after the 200: said in the text, as a chat client shows it
                yield chunk(chat_id, model, {"content": f"[error: {piece.message}]"}, finish="stop")
                yield "data: [DONE]\n\n"
                return
            if piece:
                answer += piece
                yield chunk(chat_id, model, {"content": piece})
        if after := trailing(trailer, answer):
            yield chunk(chat_id, model, {"content": after})
        yield chunk(chat_id, model, {}, finish="stop")
        yield "data: [DONE]\n\n"
    finally:
        with anyio.CancelScope(shield=True):  # a client that left: cancel the runner's generation
            await pieces.aclose()  # type: ignore[attr-defined]


def completion(model: str, result: dict[str, Any]) -> dict[str, Any]:
    prompt, done = int(result["prompt_tokens"]), int(result["completion_tokens"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "finish_reason": result["finish_reason"]}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done},
    }


def chunk(chat_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    """One server-sent event of a streamed completion."""
    body = {"id": chat_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
