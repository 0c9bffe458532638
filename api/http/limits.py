"""ASGI middleware that keeps the API alive under junk and floods: API key, upload size, concurrency
and time limits. Every refusal uses the service's error shape."""

from __future__ import annotations

import asyncio
import hmac
import tempfile
from typing import Any

from api.errors import CODES, ApiError
from api.http.asgi_types import METRICS_PATH, PROBES, App, Message, Receive, Scope, Send, StatusWatch
from api.http.paths import is_internal_path, is_ui_path

SPOOL_BYTES = 1024 * 1024  # a received body over this waits in a temporary file, not in memory
CHUNK = 64 * 1024
DOCS = ("/docs.json", "/", "/assets", "/static_content", "/schema.json")


def api_key_problem(key: str | None) -> str | None:
    """Why API_KEY can never match a request, or None: a key with white space around it (a header value
    is trimmed, so no client can send it) or with characters other than printable ASCII (HTTP headers
    carry bytes; clients encode anything else differently). Checked at start (service.py)."""
    if key is None:
        return None
    if key != key.strip():
        return "API_KEY has white space before or after it, which no request can send: remove it"
    if not key.isascii() or not key.isprintable():
        return ("API_KEY holds characters other than printable ASCII, which HTTP clients cannot send "
                "reliably in a header: use letters, digits and punctuation only")
    return None


class Disconnected(Exception):
    """The client left (or its receipt deadline closed it) before its body was in."""


class Limits:
    """Refuse early and clearly:

    - 401 without `Authorization: Bearer <API_KEY>` when a key is set (constant-time compare);
      probes and the web page's static files (/ui/) are always open, /metrics and the docs only when
      configured (the page's own API calls carry the key); the indexer's write path (/internal/) needs
      its own token instead, which api/internal_store.py checks (the key alone is refused there);
    - 413 for a body over `max_upload_bytes` (by Content-Length, or counted while it streams in);
    - the whole body is received before the request takes an in-flight slot, so slow uploads (bounded
      by the receipt deadline, api/http/receipt_deadline.py) never hold the slots complete requests need;
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
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as body:
            try:
                if not await self.receive_body(receive, body):
                    return await self.too_large()(scope, receive, send)
            except Disconnected:
                return None  # nobody is left to answer
            if self.in_flight >= self.max_concurrency:
                busy = ApiError(429, "too_many_requests", "the server is busy: retry shortly",
                                {"Retry-After": self.retry_after})
                return await busy.response()(scope, receive, send)
            self.in_flight += 1
            try:
                await self.limited(scope, replay(body, receive), send)
            finally:
                self.in_flight -= 1

    async def receive_body(self, receive: Receive, body: Any) -> bool:
        """Read the whole request body into `body`; False once it is over max_upload_bytes."""
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_upload_bytes:
                return False
            body.write(chunk)
            if not message.get("more_body", False):
                return True

    def refusal(self, scope: Scope) -> Any:
        if self.api_key is not None and not self.open_path(scope["path"]) and not self.authorized(scope):
            return ApiError(401, "unauthorized", "a valid API key is required: send the header "
                            "`Authorization: Bearer <API_KEY>`", {"WWW-Authenticate": "Bearer"}).response()
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_upload_bytes):
            return self.too_large()
        return None

    def open_path(self, path: str) -> bool:
        if is_ui_path(path) or is_internal_path(path):
            return True  # the indexer's write path checks its own, stronger, credentials (api/internal_store.py)
        if path == METRICS_PATH:
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
        """Run the app with a deadline for the first response byte."""
        watch = StatusWatch(send)
        task = asyncio.ensure_future(self.app(scope, receive, watch))
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        while not done and watch.started:  # streaming: the deadline is for the first byte only
            done, _ = await asyncio.wait({task})
        if not done:
            task.cancel()
            late = ApiError(504, CODES[504], f"no answer within {self.timeout_s:g} s: retry later")
            return await late.response()(scope, receive, send)
        task.result()


def replay(body: Any, receive: Receive) -> Receive:
    """A receive() that hands the app the stored body, then waits on the real one (for a disconnect)."""
    body.seek(0, 2)
    size = body.tell()
    body.seek(0)
    done = False

    async def replayed() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(CHUNK)
        done = body.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
