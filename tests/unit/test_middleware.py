"""api/http/middleware.py without a server: how BentoML's and Starlette's errors are described in our shape,
the form inspector that refuses text values in file fields, and the middleware driven as plain ASGI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.http.middleware import ApiContractMiddleware, FormInspector
from api.http.middleware import error_fields as describe


def test_describe_turns_bentoml_and_starlette_errors_into_code_and_message() -> None:
    validation = json.dumps({"error": "2 validation errors for Input", "detail": [
        {"type": "missing", "loc": ["text_query"], "msg": "Field required"},
        {"type": "greater_than_equal", "loc": ["top_k"], "msg": "Input should be greater than or equal to 1"}]})
    assert describe(400, "application/json", validation.encode(), "POST", "/s", None) == (
        "invalid_argument", "text_query: Field required; top_k: Input should be greater than or equal to 1")
    assert describe(415, "application/json", b'[{"error": "pickle is not allowed"}]', "POST", "/s", None) == (
        "unsupported_media_type", "pickle is not allowed")
    assert describe(500, "application/json", b'{"error": "An unexpected error has occurred"}', "POST", "/s", None) == (
        "internal_error", "An unexpected error has occurred")
    assert describe(500, "text/plain", b"Internal Server Error", "GET", "/h", None) == (
        "internal_error", "Internal Server Error")
    assert describe(504, "application/json", b"", "GET", "/h", None) == ("timeout", "Gateway Timeout")
    assert describe(404, "text/plain", b"Not Found", "GET", "/x", None) == ("not_found", "no such endpoint: GET /x")
    shaped = b'{"status": "error", "error": {"code": "model_mismatch", "message": "re-index"}}'
    assert describe(409, "application/json", shaped, "POST", "/s", None) is None


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--xyz\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + b"--xyz--\r\n"


@pytest.mark.parametrize(("body", "problem"), [
    (multipart(("question", None, b"q"), ("image", "a.png", b"\x89PNG...")), None),
    (multipart(("question", None, "图形".encode()), ("image", "", b"bytes")), None),
    (multipart(("question", None, b"q"), ("image", None, b"http://127.0.0.1:9/x")), "invalid_argument"),
    (multipart(("question", None, b"\xff")), "invalid_argument"),
    (multipart(("question", None, b"x" * (1024 * 1024 + 1))), "invalid_multipart"),
    (b"--xyz\r\nContent-Disposition: form-data\r\n\r\nq\r\n--xyz--\r\n", "invalid_multipart"),
    (b"not multipart at all", "invalid_multipart"),
])
def test_form_inspector_multipart(body: bytes, problem: str | None) -> None:
    inspector = FormInspector("multipart/form-data", {b"boundary": b"xyz"}, {"image", "video"})
    for i in range(0, len(body), 7):  # in small chunks, as a slow client would send it
        inspector.feed(body[i:i + 7], last=i + 7 >= len(body))
    assert (inspector.problem[0] if inspector.problem else None) == problem, inspector.problem


def test_form_inspector_urlencoded() -> None:
    def check(body: bytes) -> tuple[str, str] | None:
        inspector = FormInspector("application/x-www-form-urlencoded", {}, {"image"})
        inspector.feed(body, last=True)
        return inspector.problem

    assert check(b"question=%E5%9B%BE+x&image_id=a.png") is None
    assert check(b"question=q&image=http%3A%2F%2Fexample.com%2Fa.png")[0] == "invalid_argument"  # type: ignore[index]
    assert check(b"question=%FF")[0] == "invalid_argument"  # type: ignore[index]


def test_middleware_passes_success_unbuffered_and_shapes_crashes() -> None:
    """Driven as plain ASGI: a 200 body part goes out before the app has finished; an exception
    before any response becomes our 500 (BentoML's TimeoutMiddleware would otherwise hang)."""

    class Service:
        path_prefix = None
        apis: dict[str, Any] = {}

    async def scenario() -> None:
        sent: list[dict[str, Any]] = []
        release = asyncio.Event()

        async def streaming(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await release.wait()
            await send({"type": "http.response.body", "body": b"last"})

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
        task = asyncio.create_task(ApiContractMiddleware(streaming, Service)(scope, receive, send))
        for _ in range(100):
            if len(sent) == 2:
                break
            await asyncio.sleep(0.01)
        assert [m.get("body") for m in sent] == [None, b"first"] and not task.done()
        release.set()
        await task
        assert sent[-1]["body"] == b"last"

        async def crashing(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        sent.clear()
        await ApiContractMiddleware(crashing, Service)(scope, receive, send)
        assert sent[0]["status"] == 500
        assert json.loads(sent[1]["body"])["error"]["code"] == "internal_error"

    asyncio.run(scenario())
