"""The HTTP side of the service's metrics (the definitions live in core/telemetry.py).

- `RequestMetrics`: ASGI middleware counting every request by the route it reached (read from the app,
  so every endpoint, present and future, is counted) and final HTTP status;
- `index_size_text`: the `mms_index_images{collection}` gauge, as text appended to a /metrics scrape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from api.http.asgi_types import (
    METRICS_PATH,
    PROBES,
    App,
    Receive,
    Scope,
    Send,
    StatusWatch,
    match_route,
    route_of,
    routes_of,
)
from core.telemetry import metrics

# The routes that the first two counters (mms_search_requests, mms_vqa_requests) also count, as they always
# have; mms_requests counts every route.
SEARCH_ROUTES = frozenset({"/text2image_search", "/image2image_search"})
VQA_ROUTES = frozenset({"/vqa", "/vqa/stream", "/v1/chat/completions"})
UNCOUNTED = PROBES | {METRICS_PATH}


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
    """ASGI middleware: count each request by its route's path template (`/images/{path:path}`, not each
    file) and final HTTP status, refusals by the API-key, size and concurrency limits included (it sits
    outside them: such a request is counted under the route it would have reached). Requests that reach
    no route (a 404 for an unknown path) are not counted, so no client can add label values at will."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.routes: Sequence[Any] | None = None  # read from the app at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNCOUNTED:
            return await self.app(scope, receive, send)
        watch = StatusWatch(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.count(scope, watch.status)

    def count(self, scope: Scope, status: int) -> None:
        if self.routes is None:
            self.routes = routes_of(self.app)
        path = scope.get("path")
        endpoint = (route_of(scope) or match_route(self.routes, scope)
                    or (path if path in SEARCH_ROUTES or path in VQA_ROUTES else None))  # plain paths, these
        if endpoint is None:
            return
        labels = {"endpoint": endpoint, "status": str(status)}
        metrics().requests.labels(**labels).inc()
        if endpoint in SEARCH_ROUTES:
            metrics().searches.labels(**labels).inc()
        elif endpoint in VQA_ROUTES:
            metrics().vqa.labels(**labels).inc()
