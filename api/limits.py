"""ASGI middleware that keeps the API alive under junk and floods: API key, upload size, concurrency
and time limits. Every refusal uses the service's error shape."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.errors import ApiError
from api.ui import is_ui_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/livez", "/readyz", "/healthz"})
DOCS = ("/docs.json", "/", "/assets", "/static_content", "/schema.json")


class TooLarge(Exception):
    pass


class Limits:
    """Refuse early and clearly:

    - 401 without `Authorization: Bearer <API_KEY>` when a key is set (constant-time compare);
      probes and the web page's static files (/ui/) are always open, /metrics and the docs only when
      configured (the page's own API calls carry the key);
    - 413 for a body over `max_upload_bytes` (by Content-Length, or counted while it streams in);
    - 429 with Retry-After when `max_concurrency` requests are already in flight;
    - 504 when no response has started within `timeout_s`.
    """

    def __init__(self, app: App, *, api_key: str | None, public_metrics: bool, public_docs: bool,
                 max_upload_bytes: int, max_concurrency: int, timeout_s: float, retry_after_s: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.public_metrics = public_metrics
        self.public_docs = public_docs
        self.max_upload_bytes = max_upload_bytes
        self.slots = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retry_after = str(retry_after_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if self.in_flight >= self.max_concurrency:
            busy = ApiError(429, "too_many_requests", "the server is busy: retry shortly",
                            {"Retry-After": self.retry_after})
            return await busy.response()(scope, receive, send)
        self.in_flight += 1
        try:
            await self.limited(scope, receive, send)
        finally:
            self.in_flight -= 1

    def refusal(self, scope: Scope) -> Any:
        if self.api_key is not None and not self.open_path(scope["path"]) and not self.authorized(scope):
            return ApiError(401, "unauthorized", "a valid API key is required: send the header "
                            "`Authorization: Bearer <API_KEY>`", {"WWW-Authenticate": "Bearer"}).response()
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_upload_bytes):
            return self.too_large()
        return None

    def open_path(self, path: str) -> bool:
        if is_ui_path(path):
            return True
        if path == "/metrics":
            return self.public_metrics
        return self.public_docs and (path in DOCS or path.startswith(("/assets/", "/static_content/")))

    def authorized(self, scope: Scope) -> bool:
        value = header(scope, b"authorization") or ""
        scheme, _, token = value.partition(" ")
        assert self.api_key is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key)

    def too_large(self) -> Any:
        mb = self.max_upload_bytes / 1024 / 1024
        return ApiError(413, "payload_too_large", f"the request body is over MAX_UPLOAD_MB ({mb:g} MB)").response()

    async def limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a counted body and a deadline for the first response byte."""
        state = {"received": 0, "too_large": False, "started": False, "replaced": False}

        async def counted_receive() -> Message:
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_upload_bytes:
                state["too_large"] = True
                raise TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and state["too_large"]:
                state["replaced"] = True  # whatever the app made of the cut-off body, answer 413
                await self.too_large()(scope, receive, send)
            if state["replaced"]:
                return
            state["started"] = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, counted_receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        while not done and state["started"]:  # streaming: the deadline is for the first byte only
            done, _ = await asyncio.wait({task})
        if not done:
            task.cancel()
            late = ApiError(504, "timeout", f"no answer within {self.timeout_s:g} s: retry later")
            return await late.response()(scope, receive, send)
        try:
            task.result()
        except TooLarge:
            if not state["started"] and not state["replaced"]:
                await self.too_large()(scope, receive, send)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
