"""The HTTP side of the service's metrics (the definitions live in core/telemetry.py).

- `RequestMetrics`: ASGI middleware counting search and VQA requests by route and final HTTP status;
- `index_size_text`: the `mms_index_images{collection}` gauge, as text appended to a /metrics scrape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from core.telemetry import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SEARCH_ROUTES = frozenset({"/text2image_search", "/image2image_search"})
VQA_ROUTES = frozenset({"/vqa", "/vqa/stream", "/v1/chat/completions"})


def index_size_text(collection: str, count: int | None) -> str:
    """The index-size gauge in Prometheus' text format, to append to a scrape (no sample if unknown)."""
    text = ("# HELP mms_index_images Images in the vector collection, counted at scrape time\n"
            "# TYPE mms_index_images gauge\n")
    if count is not None:
        text += f'mms_index_images{{collection="{escape(collection)}"}} {float(count)}\n'
    return text


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestMetrics:
    """ASGI middleware: count search and VQA requests by route and final HTTP status (refusals by the
    API-key, size and concurrency limits included, when it sits outside them)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path not in SEARCH_ROUTES and path not in VQA_ROUTES):
            return await self.app(scope, receive, send)
        status = {"code": 500}  # an app that raises before answering

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            counter = metrics().searches if path in SEARCH_ROUTES else metrics().vqa
            counter.labels(endpoint=path, status=str(status["code"])).inc()
